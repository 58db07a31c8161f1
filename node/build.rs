//! Embeds Courier Web's built page (`web/dist`, made by `npm run build` in
//! `web/`, which `scripts/setup` runs) into the node: one binary still
//! deploys a node, page included.

use std::path::Path;

/// The page's files: path served, file in `web/dist`, content type.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/app.js", "app.js", "text/javascript; charset=utf-8"),
    ("/style.css", "style.css", "text/css; charset=utf-8"),
];

fn main() {
    // Read at run time: `env!` would bake in the directory the script was
    // compiled in, and a target directory shared by two checkouts (CI's clone
    // and a work tree) would embed the other checkout's page.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let dist = Path::new(&manifest).join("../web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut out = String::from("/// Courier Web's files: (path, content type, bytes).\npub static ASSETS: &[(&str, &str, &[u8])] = &[\n");
    for (path, file, kind) in ASSETS {
        let f = dist.join(file);
        println!("cargo:rerun-if-changed={}", f.display());
        if !f.is_file() {
            panic!(
                "\n\nCourier Web's page is not built: {} is missing.\n\
                 Run `scripts/setup` (it installs Node's packages and builds the page),\n\
                 or by hand: `cd web && npm ci && npm run build` (needs Node 20+ and protoc).\n\n",
                f.display()
            );
        }
        let abs = f.canonicalize().expect("a built file's path");
        out.push_str(&format!("    ({path:?}, {kind:?}, include_bytes!({:?})),\n", abs.display().to_string()));
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("web_assets.rs");
    std::fs::write(dest, out).expect("write web_assets.rs");
}
