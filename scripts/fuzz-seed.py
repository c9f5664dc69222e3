"""Seeds the organisation scripts/fuzz tests as, and writes the schemathesis configuration that
points the generated path ids at real resources (most of the time: some ids stay random, to
exercise the 404s). Resources that DELETE operations receive are separate ones, so deleting
them does not starve the other operations. Standard library only.

usage: fuzz-seed.py BASE_URL TOKEN CONFIG_OUT
"""

import json
import sys
import urllib.request

base, token, out = sys.argv[1], sys.argv[2], sys.argv[3]


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req) as res:
        return json.load(res)


def panel(name):
    return call("POST", "/api/panels", {"name": name})["id"]


def source(panel_id):
    return call("POST", f"/api/panels/{panel_id}/datasources",
                {"type": "custom", "config": {"keyField": "mrn"}})["id"]


def column(panel_id, source_id, name):
    return call("POST", f"/api/panels/{panel_id}/columns/base", {
        "name": name, "type": "text", "sourceField": name.lower(), "dataSourceId": source_id,
        "properties": {"display": {"order": 0}},
    })["id"]


p, p_doomed = panel("Fuzz panel"), panel("Fuzz panel to delete")
d, d_doomed = source(p), source(p)
f = call("POST", f"/api/panels/{p}/datasources", {"type": "file", "config": {"format": "csv", "keyField": "mrn"}})["id"]
call("POST", f"/api/panels/{p}/datasources/{d}/records",
     {"records": [{"mrn": "1", "name": "Ada", "age": 36}, {"mrn": "2", "name": "Grace", "age": 45}]})
c, c_doomed = column(p, d, "Name"), column(p, d, "Spare")
call("POST", f"/api/panels/{p}/columns/calculated", {
    "name": "Shout", "type": "text", "formula": "UPPER(Name)", "properties": {"display": {"order": 1}}})
v = call("POST", "/api/views", {"name": "Fuzz view", "panelId": p, "visibleColumns": [str(c)]})["id"]
v_doomed = call("POST", "/api/views", {"name": "Fuzz view to delete", "panelId": p})["id"]

ids = {"panel": p, "panel_doomed": p_doomed, "source": d, "source_doomed": d_doomed, "file_source": f,
       "column": c, "column_doomed": c_doomed, "view": v, "view_doomed": v_doomed}


def bind(name):
    return f'{{ dictionary = "{name}", probability = 0.9 }}'


# The admin's token on every operation, but logout: it revokes the access token it is called with,
# which would leave every later operation answering 401. Logout gets a token of no session.
lines = ["# Written by scripts/fuzz-seed.py for one run.", "",
         f'headers = {{ Authorization = "Bearer {token}" }}', "",
         "[cache]", 'directory = "target/fuzz-cache"', "", "[dictionaries]"]
lines += [f'{name} = {{ values = [{value}] }}' for name, value in ids.items()]
lines += ['resource = { values = [%d, %d] }' % (p, v), ""]


def operation(selector, parameters):
    lines.append("[[operations]]")
    lines.extend(selector)
    lines.append("parameters = { " + ", ".join(f'"{k}" = {bind(n)}' for k, n in parameters.items()) + " }")
    lines.append("")


not_delete = ['exclude-method = "DELETE"']
operation(['include-path-regex = "^/api/panels/\\\\{id\\\\}"', 'exclude-path-regex = "/(upload|columns/base)$"'] + not_delete,
          {"path.id": "panel", "path.dsId": "source", "path.colId": "column"})
operation(['include-path = "/api/panels/{id}"', 'include-method = "DELETE"'], {"path.id": "panel_doomed"})
operation(['include-path = "/api/panels/{id}/datasources/{dsId}/upload"'], {"path.id": "panel", "path.dsId": "file_source"})
operation(['include-path = "/api/panels/{id}/datasources/{dsId}"', 'include-method = "DELETE"'],
          {"path.id": "panel", "path.dsId": "source_doomed"})
operation(['include-path = "/api/panels/{id}/columns/{colId}"', 'include-method = "DELETE"'],
          {"path.id": "panel", "path.colId": "column_doomed"})
operation(['include-path-regex = "^/api/views/\\\\{id\\\\}"'] + not_delete, {"path.id": "view"})
operation(['include-path = "/api/views/{id}"', 'include-method = "DELETE"'], {"path.id": "view_doomed"})
operation(['include-path-regex = "^/api/acls/\\\\{resourceType\\\\}"'], {"path.resourceId": "resource"})
operation(['include-path = "/api/views"'], {"query.panelId": "panel", "body.panelId": "panel"})
operation(['include-path = "/api/panels/{id}/columns/base"', 'include-method = "POST"'],
          {"path.id": "panel", "body.dataSourceId": "source"})

lines += ["[[operations]]", 'include-path = "/api/auth/logout"',
          'headers = { Authorization = "Bearer not-a-session-token" }', ""]

with open(out, "w") as f:
    f.write("\n".join(lines))
print(json.dumps(ids), file=sys.stderr)
