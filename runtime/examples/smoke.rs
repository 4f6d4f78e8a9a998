fn main() {
    let rt = sandlot::Runtime::builder()
        .data_dir("/tmp/sandlot-data")
        .build()
        .expect("runtime");
    let t = std::time::Instant::now();
    match rt.create(sandlot::SandboxOptions::default()) {
        Ok(sb) => {
            println!("created {} in {:?}", sb.id(), t.elapsed());
            let out = sb.commands().run(
                "id; hostname; echo $$; ls /; cat /proc/self/cgroup",
                Default::default(),
            );
            println!("{out:?}");
            sb.kill().unwrap();
        }
        Err(e) => println!("create failed after {:?}: {e}", t.elapsed()),
    }
}
