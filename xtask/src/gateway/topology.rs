//! The lab's network: five namespaces (two clients, an attacker, the gateway, the server) and
//! the veth pairs between them, addressed as the module docs of [`super`] say.
use super::{
    CLIENT, CLIENT2, DNS_SERVER, FLOOD_SOURCE, FLOOD_TARGET, GUESS_SOURCE, GUESS_TARGET,
    HTTP_SERVER, PING_FLOOD_SOURCE, PING_FLOOD_TARGET, PING_SERVER, PORT_SCAN_SOURCE,
    PORT_SCAN_TARGET, SSH_SERVER, SWEEP_FIRST, SWEEP_SOURCE, UDP_RR_SERVER, UDP_SCAN_SOURCE,
    UDP_SCAN_TARGET,
};
use crate::lab::{Netns, Veth};

/// Router solicitations a host sends when no router answers. The kernel's default (-1) keeps
/// soliciting forever with a growing interval (RFC 7559), a generator without a bound; 3 is
/// RFC 4861's MAX_RTR_SOLICITATIONS (and Linux's old default).
const ROUTER_SOLICITATIONS: &str = "3";

/// The namespaces and the interfaces between them.
pub struct GatewayLab {
    pub client: Netns,
    pub client2: Netns,
    pub attacker: Netns,
    pub gateway: Netns,
    pub server: Netns,
    /// The gateway's interfaces: towards client, client2, attacker, server.
    pub gw_ifaces: Vec<String>,
    client_if: String,
    client2_if: String,
    pub(super) attacker_if: String,
    server_if: String,
}

impl GatewayLab {
    pub fn new() -> Result<GatewayLab, String> {
        let client = Netns::new("cli")?;
        let client2 = Netns::new("cl2")?;
        let attacker = Netns::new("atk")?;
        let gateway = Netns::new("gw")?;
        let server = Netns::new("srv")?;
        // IPv6 stays off until the sensor watches (`enable_ipv6`), so that the kernel's
        // link-local chatter happens in front of it, as it does when a host boots.
        for ns in [&client, &client2, &attacker, &gateway, &server] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        let cv = Veth::new("c", &client, &gateway)?;
        let dv = Veth::new("d", &client2, &gateway)?;
        let av = Veth::new("a", &attacker, &gateway)?;
        let sv = Veth::new("s", &server, &gateway)?;
        let addr = |ns: &Netns, a: &str, dev: &str| ns.ip(&["addr", "add", a, "dev", dev]);
        addr(&client, &format!("{CLIENT}/24"), &cv.a)?;
        addr(&client2, &format!("{CLIENT2}/24"), &dv.a)?;
        addr(&attacker, &format!("{FLOOD_SOURCE}/24"), &av.a)?;
        for a in [
            PORT_SCAN_SOURCE,
            UDP_SCAN_SOURCE,
            SWEEP_SOURCE,
            PING_FLOOD_SOURCE,
            GUESS_SOURCE,
        ] {
            addr(&attacker, &format!("{a}/32"), &av.a)?;
        }
        addr(&gateway, "198.18.1.254/24", &cv.b)?;
        addr(&gateway, "198.18.3.254/24", &dv.b)?;
        addr(&gateway, "198.18.4.254/24", &av.b)?;
        addr(&gateway, "198.18.2.254/24", &sv.b)?;
        addr(&server, &format!("{HTTP_SERVER}/24"), &sv.a)?;
        let mut extra: Vec<String> = [
            DNS_SERVER,
            PING_SERVER,
            PORT_SCAN_TARGET,
            SSH_SERVER,
            UDP_SCAN_TARGET,
            UDP_RR_SERVER,
            PING_FLOOD_TARGET,
            GUESS_TARGET,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        extra.extend((SWEEP_FIRST..=29).map(|i| format!("198.18.2.{i}")));
        for a in &extra {
            addr(&server, &format!("{a}/32"), &sv.a)?;
        }
        // Each host reaches the rest of the lab through the gateway, and nothing beyond it.
        for (ns, gw) in [
            (&client, "198.18.1.254"),
            (&client2, "198.18.3.254"),
            (&attacker, "198.18.4.254"),
            (&server, "198.18.2.254"),
        ] {
            ns.ip(&["route", "add", "198.18.0.0/15", "via", gw])?;
        }
        gateway.ip(&["route", "add", "blackhole", &format!("{FLOOD_TARGET}/32")])?;
        gateway.sysctl("net.ipv4.ip_forward", "1")?;
        // Answer every closed UDP port of the scan (the default rate limit drops most replies).
        server.sysctl("net.ipv4.icmp_ratelimit", "0")?;
        Ok(GatewayLab {
            client,
            client2,
            attacker,
            gateway,
            server,
            gw_ifaces: vec![cv.b, dv.b, av.b, sv.b],
            client_if: cv.a,
            client2_if: dv.a,
            attacker_if: av.a,
            server_if: sv.a,
        })
    }

    /// Switches IPv6 on for every lab interface: each gets a link-local address (after
    /// duplicate address detection), joins its multicast groups (MLD reports) and solicits a
    /// router (none answers: the gateway does not route IPv6, and no host gets an address
    /// beyond the link).
    pub fn enable_ipv6(&self) -> Result<(), String> {
        let hosts: [(&Netns, Vec<&str>); 5] = [
            (&self.client, vec![&self.client_if]),
            (&self.client2, vec![&self.client2_if]),
            (&self.attacker, vec![&self.attacker_if]),
            (&self.server, vec![&self.server_if]),
            (
                &self.gateway,
                self.gw_ifaces.iter().map(String::as_str).collect(),
            ),
        ];
        for (ns, ifaces) in hosts {
            ns.sysctl("net.ipv6.conf.all.forwarding", "0")?;
            for i in ifaces {
                ns.sysctl(
                    &format!("net.ipv6.conf.{i}.router_solicitations"),
                    ROUTER_SOLICITATIONS,
                )?;
                ns.sysctl(&format!("net.ipv6.conf.{i}.accept_dad"), "1")?;
                ns.sysctl(&format!("net.ipv6.conf.{i}.disable_ipv6"), "0")?;
            }
        }
        Ok(())
    }
}
