//! What a sandbox's network costs at create, step by step: the host-made
//! namespace, `lo` and the local routes, the low-ports sysctl, the host's
//! sockets, the steering program and its link; then the whole thing on
//! the calling thread and through the `sandlot-netns` thread, teardown,
//! and one `setns` round trip (what the spawner adds around clone3).
//!
//! ```sh
//! cargo run --release -p sandlot --example net_cost [-- 500]
//! ```
//! Needs root.

use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use sandlot::testing::kernel_net::program::Slot;
use sandlot::testing::kernel_net::{netlink, setup, sysctl, NetNamespace, NetnsFactory, Steering};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn report(what: &str, samples: Vec<Duration>) {
    let mut sorted = samples.clone();
    sorted.sort();
    let p90 = sorted[sorted.len() * 9 / 10];
    println!(
        "{what:<48} median {:>7.1} µs   p90 {:>7.1} µs",
        median(samples).as_secs_f64() * 1e6,
        p90.as_secs_f64() * 1e6
    );
}

fn main() -> Result<(), sandlot::Error> {
    let runs: usize = std::env::args()
        .nth(1)
        .map_or(300, |n| n.parse().expect("a count"));
    let home = NetNamespace::current()?;
    let t = |f: &mut dyn FnMut()| {
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect::<Vec<_>>()
    };

    // Each step alone, cumulatively (each includes the ones above it).
    report(
        "unshare(NEWNET) + fd + setns back",
        t(&mut || {
            NetNamespace::create(&home, |_| Ok(())).unwrap();
        }),
    );
    report(
        "  + lo up and local routes (netlink)",
        t(&mut || {
            NetNamespace::create(&home, |_| {
                netlink::configure_loopback(setup::ipv6_available())
            })
            .unwrap();
        }),
    );
    report(
        "  + ip_unprivileged_port_start",
        t(&mut || {
            NetNamespace::create(&home, |_| {
                netlink::configure_loopback(setup::ipv6_available())?;
                sysctl::allow_unprivileged_low_ports()
            })
            .unwrap();
        }),
    );
    report(
        "steering alone (map, program load, link)",
        t(&mut || {
            let (ns, ()) = NetNamespace::create(&home, |_| Ok(())).unwrap();
            let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let start = Instant::now();
            let steering = Steering::attach(
                ns.as_fd(),
                &[
                    (Slot::Proxy, tcp.as_fd()),
                    (Slot::DnsTcp, tcp.as_fd()),
                    (Slot::DnsUdp, udp.as_fd()),
                ],
            )
            .unwrap();
            STEER.with(|s| s.borrow_mut().push(start.elapsed()));
            drop(steering);
        }),
    );
    report("  (of which the attach itself)", STEER.with(|s| s.take()));

    let mut teardown = Vec::new();
    report(
        "whole setup::create on the calling thread",
        t(&mut || {
            let made = setup::create(&home).unwrap();
            let start = Instant::now();
            drop(made);
            teardown.push(start.elapsed());
        }),
    );
    report("teardown (drop sockets, link, namespace fd)", teardown);

    let factory = NetnsFactory::start(0)?;
    report(
        "whole create through the factory, none kept ready",
        t(&mut || {
            drop(factory.create().unwrap());
        }),
    );
    drop(factory);
    // With namespaces kept ready, paced like creates that come 5 ms apart
    // (the thread refills between them).
    let factory = NetnsFactory::start(2)?;
    std::thread::sleep(Duration::from_millis(50));
    let mut taken = Vec::new();
    report(
        "create + 5 ms pause, 2 kept ready",
        t(&mut || {
            let start = Instant::now();
            let made = factory.create().unwrap();
            taken.push(start.elapsed());
            drop(made);
            std::thread::sleep(Duration::from_millis(5));
        }),
    );
    report("  (of which taking a ready one)", taken);
    drop(factory);

    // Handing a ready namespace to the proxy engine (its loop registers
    // the sockets and answers).
    let engine = sandlot::testing::net::NetEngine::start(Default::default())?;
    let factory = NetnsFactory::start(2)?;
    let network = sandlot::testing::net::Network::internet();
    let mut attach = Vec::new();
    report(
        "take a ready one + engine attach + 5 ms pause",
        t(&mut || {
            let (ns, sockets) = factory.create().unwrap();
            let start = Instant::now();
            let net = engine
                .attach("cost", &ns.netns, sockets, &network, None)
                .unwrap();
            attach.push(start.elapsed());
            drop(net);
            drop(ns);
            std::thread::sleep(Duration::from_millis(5));
        }),
    );
    report("  (of which the attach)", attach);
    drop((factory, engine));

    // Without teardowns in between: the kernel destroys namespaces in a
    // work queue that holds the rtnl lock through RCU grace periods, and
    // a namespace being made waits for that lock to register its lo.
    std::thread::sleep(Duration::from_secs(2));
    let mut kept = Vec::new();
    report(
        "whole setup::create, none destroyed meanwhile",
        t(&mut || kept.push(setup::create(&home).unwrap())),
    );
    drop(kept);

    let (ns, _sockets) = setup::create(&home)?;
    report(
        "setns into it and back (spawner, per clone3)",
        t(&mut || {
            drop(ns.netns.enter(&home).unwrap());
        }),
    );
    Ok(())
}

thread_local! {
    static STEER: std::cell::RefCell<Vec<Duration>> = const { std::cell::RefCell::new(Vec::new()) };
}
