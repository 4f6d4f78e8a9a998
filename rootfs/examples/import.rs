//! Imports an OCI image layout (or a `.tar` of one) or a root filesystem
//! directory into a template store and prints the result — a manual check
//! of `Store` until the `sandlot template` CLI exists.
//!
//! ```text
//! cargo run -p sandlot-rootfs --release --example import -- DATA_DIR NAME PATH
//! ```
//!
//! PATH is imported with `import_dir` if it has an `etc/` directory and no
//! `index.json`, with `import_oci` otherwise.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use sandlot_rootfs::Store;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data_dir, name, path] = args.as_slice() else {
        eprintln!("usage: import DATA_DIR NAME PATH");
        return ExitCode::from(2);
    };
    let path = PathBuf::from(path);
    let result = Store::open(data_dir).and_then(|store| {
        let started = Instant::now();
        let template = if path.join("etc").is_dir() && !path.join("index.json").exists() {
            store.import_dir(name, &path)?
        } else {
            store.import_oci(name, &path)?
        };
        println!("imported {name} in {:.2?}", started.elapsed());
        println!("{template:#?}");
        for summary in store.list()? {
            println!(
                "{:<20} {:>3} layer(s) {:>12} bytes  {:?}",
                summary.name, summary.layers, summary.size, summary.kind
            );
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("import: {e}");
            ExitCode::FAILURE
        }
    }
}
