// Migrations are embedded by `sqlx::migrate!`; a new or changed file must rebuild the binary
// even when no Rust source changed (without this, cargo keeps the stale binary).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
