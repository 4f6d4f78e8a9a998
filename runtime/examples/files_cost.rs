//! What the files API costs, against doing the same through a process
//! inside the sandbox (`cat`), which is what the alternative design — file
//! operations from a helper that entered the sandbox — would pay at least.
//!
//! ```sh
//! cargo run --release -p sandlot --example files_cost [-- /usr/lib/python3.11]
//! ```
//! Needs root; uses the default data dir.

use std::io::Read;
use std::time::{Duration, Instant};

use sandlot::{RunOptions, Runtime, SandboxOptions};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut(usize) -> T) -> Duration {
    let samples = (0..runs)
        .map(|i| {
            let start = Instant::now();
            std::hint::black_box(f(i));
            start.elapsed()
        })
        .collect();
    median(samples)
}

fn main() -> Result<(), sandlot::Error> {
    let tree = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/usr/lib/python3.11".into());
    let rt = Runtime::new()?;
    let sb = rt.create(SandboxOptions::default().disk(1 << 30))?;
    let files = sb.files();
    let small = vec![b'x'; 100];
    let big = vec![7u8; 10 << 20];

    println!("operation                                   median");
    let row = |what: &str, d: Duration| println!("{what:<42} {d:>10.1?}");

    row(
        "write 100 B, new file",
        time(2000, |i| {
            files.write(&format!("/tmp/small/{i}"), &small).unwrap()
        }),
    );
    row(
        "write 100 B, overwrite",
        time(2000, |_| files.write("/tmp/small/0", &small).unwrap()),
    );
    row(
        "read 100 B",
        time(2000, |_| files.read("/tmp/small/0").unwrap()),
    );
    row("stat", time(2000, |_| files.stat("/tmp/small/0").unwrap()));
    row(
        "exists (missing)",
        time(2000, |_| files.exists("/tmp/none").unwrap()),
    );
    row(
        "write 10 MiB",
        time(20, |i| {
            files.write(&format!("/tmp/big{}", i % 2), &big).unwrap()
        }),
    );
    row(
        "read 10 MiB",
        time(20, |_| files.read("/tmp/big0").unwrap()),
    );

    let cmd = sb.commands();
    row(
        "inside: cat > file, 100 B (stdin)",
        time(200, |_| {
            cmd.run("cat > /tmp/c", RunOptions::default().stdin(small.clone()))
                .unwrap()
        }),
    );
    row(
        "inside: cat file, 100 B (stdout)",
        time(200, |_| {
            cmd.run(["cat", "/tmp/small/0"], RunOptions::default())
                .unwrap()
        }),
    );
    row(
        "inside: cat > file, 10 MiB (stdin)",
        time(10, |_| {
            cmd.run("cat > /tmp/c", RunOptions::default().stdin(big.clone()))
                .unwrap()
        }),
    );
    row(
        "inside: cat file, 10 MiB (stdout)",
        time(10, |_| {
            cmd.run(["cat", "/tmp/big0"], RunOptions::default())
                .unwrap()
        }),
    );

    // A real tree: list, export, import, watch.
    let start = Instant::now();
    let entries = files.list(&tree, 64)?;
    row(
        &format!("list {tree} ({} entries)", entries.len()),
        start.elapsed(),
    );
    let start = Instant::now();
    let mut archive = Vec::new();
    files
        .export_tar(&tree)?
        .read_to_end(&mut archive)
        .map_err(|e| sandlot::Error::Io {
            context: "export".into(),
            source: e,
        })?;
    let took = start.elapsed();
    row(
        &format!(
            "export_tar ({:.1} MiB)",
            archive.len() as f64 / (1 << 20) as f64
        ),
        took,
    );
    println!(
        "{:<42} {:>8.0} MiB/s",
        "  export throughput",
        archive.len() as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
    let start = Instant::now();
    let imported = files.import_tar("/tmp/imported", &archive[..])?;
    row(
        &format!("import_tar ({} entries)", imported.entries),
        start.elapsed(),
    );
    let start = Instant::now();
    let watch = files.watch("/tmp/imported", true)?;
    row("watch, recursive, on the imported tree", start.elapsed());
    let start = Instant::now();
    drop(watch);
    row("  drop the watch", start.elapsed());
    sb.kill()?;
    Ok(())
}
