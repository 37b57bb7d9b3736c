//! A network the test makes: one Linux network namespace per node, each with its own address,
//! linked to a bridge in a namespace of its own (the "switch": the host's firewall, Docker's
//! included, does not see its traffic), so that gossip between nodes crosses a real (virtual)
//! link and can be cut. The test's own namespace is linked to the bridge too, at `.1`, to reach
//! the nodes' HTTP ports and to serve them upstreams. Needs root and `ip`/`iptables`;
//! [`Network::new`] says why not when they are missing, and tests then skip with that reason.
//!
//! Addresses are `10.<a>.<b>.0/24` (unique per process and network); node `i` is `.<i + 2>`.
//! Everything is removed when the [`Network`] is dropped.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// Namespaces and a bridge, removed on drop.
pub struct Network {
    /// `<pid><n>`, in every name this network made.
    id: String,
    subnet: [u8; 3],
    nodes: usize,
}

/// Runs `ip`/`iptables` with `args` (after `ip netns exec <ns>` when given); the error says what
/// failed and what it printed.
fn run(ns: Option<&str>, program: &str, args: &[&str]) -> Result<(), String> {
    let mut command = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    };
    let output = command.args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

impl Network {
    /// A bridge and `nodes` namespaces linked to it; why not, when this machine cannot.
    pub fn new(nodes: usize) -> Result<Network, String> {
        let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let subnet = [10, 100 + (n % 100) as u8, (pid % 250) as u8];
        // Dropped on an error: what was made so far is removed.
        let mut network = Network { id: format!("{}{n}", pid % 100_000), subnet, nodes: 0 };
        let (switch, bridge) = (network.switch(), "br0");
        run(None, "ip", &["netns", "add", &switch])?;
        run(Some(&switch), "ip", &["link", "add", bridge, "type", "bridge"])?;
        run(Some(&switch), "ip", &["link", "set", bridge, "up"])?;
        let (host, port) = (format!("gwh{}", network.id), format!("gwp{}", network.id));
        run(None, "ip", &["link", "add", &host, "type", "veth", "peer", "name", &port])?;
        network.plug(&port)?;
        let cidr = format!("{}/24", network.host_ip());
        run(None, "ip", &["addr", "add", &cidr, "dev", &host])?;
        run(None, "ip", &["link", "set", &host, "up"])?;
        for i in 0..nodes {
            network.nodes = i + 1;
            network.add_node(i)?;
        }
        Ok(network)
    }

    fn switch(&self) -> String {
        format!("gws{}", self.id)
    }

    /// Moves the veth end `port` into the switch and onto its bridge.
    fn plug(&self, port: &str) -> Result<(), String> {
        let switch = self.switch();
        run(None, "ip", &["link", "set", port, "netns", &switch])?;
        run(Some(&switch), "ip", &["link", "set", port, "master", "br0"])?;
        run(Some(&switch), "ip", &["link", "set", port, "up"])
    }

    fn add_node(&self, i: usize) -> Result<(), String> {
        let ns = self.namespace(i);
        let (outside, inside) = (format!("gwo{}n{i}", self.id), format!("gwi{}n{i}", self.id));
        run(None, "ip", &["netns", "add", &ns])?;
        run(None, "ip", &["link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
        run(None, "ip", &["link", "set", &inside, "netns", &ns])?;
        self.plug(&outside)?;
        let cidr = format!("{}/24", self.node_ip(i));
        run(Some(&ns), "ip", &["addr", "add", &cidr, "dev", &inside])?;
        run(Some(&ns), "ip", &["link", "set", &inside, "up"])?;
        run(Some(&ns), "ip", &["link", "set", "lo", "up"])
    }

    /// Node `i`'s namespace, for `ip netns exec`.
    pub fn namespace(&self, i: usize) -> String {
        format!("gwn{}n{i}", self.id)
    }

    /// The test's own address on the bridge: upstreams the nodes reach listen here.
    pub fn host_ip(&self) -> IpAddr {
        let [a, b, c] = self.subnet;
        IpAddr::V4(Ipv4Addr::new(a, b, c, 1))
    }

    /// Node `i`'s address.
    pub fn node_ip(&self, i: usize) -> IpAddr {
        let [a, b, c] = self.subnet;
        IpAddr::V4(Ipv4Addr::new(a, b, c, i as u8 + 2))
    }

    /// Cuts node `i`'s UDP traffic (gossip) both ways; HTTP to and from it still passes, so the
    /// test can watch it from outside.
    pub fn cut_gossip(&self, i: usize) {
        let ns = self.namespace(i);
        for chain in ["INPUT", "OUTPUT"] {
            run(Some(&ns), "iptables", &["-A", chain, "-p", "udp", "-j", "DROP"]).expect("cut the node's gossip");
        }
    }

    /// Lets node `i`'s gossip through again.
    pub fn heal_gossip(&self, i: usize) {
        run(Some(&self.namespace(i)), "iptables", &["-F"]).expect("heal the node's gossip");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            let _ = run(None, "ip", &["netns", "del", &self.namespace(i)]);
        }
        // With the switch go the bridge and every veth pair with an end in it.
        let _ = run(None, "ip", &["netns", "del", &self.switch()]);
    }
}
