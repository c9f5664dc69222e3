"""The load benchmark's driver, by concern (bench/run.py is its entry point):

  settings  the knobs, read once from the environment, and the log line;
  seed      the seeded database: psql, row-level security per table, pgbench, the tenants;
  drive     the server under test, oha, the measurements from /proc, the mix;
  report    the Markdown and JSON report;
  main      the phases of a run, in order.
"""
