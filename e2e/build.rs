//! Tells the tests whether a `rethinkdb` server binary is on PATH (`cfg(rethinkdb_on_path)`):
//! the tests that need a real RethinkDB (users and grants, which reqlite lacks) run only
//! then, and are reported as ignored, not passed, otherwise.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(rethinkdb_on_path)");
    println!("cargo::rerun-if-env-changed=PATH");
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("rethinkdb").is_file())
    });
    if on_path {
        println!("cargo::rustc-cfg=rethinkdb_on_path");
    }
}
