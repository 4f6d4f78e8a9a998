use std::time::Instant;
fn main() {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let rt = sandlot::Runtime::builder()
                    .data_dir("/tmp/sandlot-data")
                    .build()
                    .expect("runtime");
                for i in 0..50 {
                    let start = Instant::now();
                    match rt.create(sandlot::SandboxOptions::default()) {
                        Ok(sb) => {
                            let _ = sb.commands().run("true", Default::default());
                            sb.kill().unwrap();
                        }
                        Err(e) => {
                            eprintln!("thread {t} iter {i}: {e} after {:?}", start.elapsed());
                            std::thread::sleep(std::time::Duration::from_secs(1000));
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    println!("done");
}
