//! Special-use addresses that a server-side fetch must never reach (SSRF): loopback, private,
//! link-local (including cloud metadata at 169.254.169.254), CGNAT, documentation, benchmarking,
//! multicast, reserved, and the IPv6 forms that embed IPv4 or reach private networks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn is_special_use(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_special(v4),
        IpAddr::V6(v6) => v6_special(v6),
    }
}

/// Loopback and private networks (RFC 1918, CGNAT, IPv6 unique local): where an operator's own
/// identity provider may live. Never link-local (cloud metadata), multicast or reserved space.
pub fn is_private_network(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, _, _] = v4.octets();
            a == 10
                || a == 127
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

fn v4_special(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0                                  // 0.0.0.0/8 "this network"
        || a == 10                          // private
        || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10 CGNAT
        || a == 127                         // loopback
        || (a == 169 && b == 254)           // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0)   // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)   // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)           // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224 // multicast, reserved, broadcast
}

fn v6_special(ip: Ipv6Addr) -> bool {
    if ip.to_ipv4_mapped().is_some() {
        // IPv4-mapped (::ffff:a.b.c.d): a way to smuggle any IPv4 address; never fetched.
        return true;
    }
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || s[0..6] == [0, 0, 0, 0, 0, 0]    // IPv4-compatible ::a.b.c.d (deprecated)
        || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 64:ff9b::/96 and 64:ff9b:1::/48
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] < 0x200) // 2001::/23 IETF protocol assignments (Teredo, ...)
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || s[0] == 0x2002                   // 6to4
        || (s[0] & 0xfe00) == 0xfc00        // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80        // link-local
        || (s[0] & 0xffc0) == 0xfec0        // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_use_addresses() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "2002:a00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(is_special_use(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in
            ["8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1", "93.184.216.34", "2606:4700::1111", "2a00:1450::1"]
        {
            assert!(!is_special_use(ip.parse().unwrap()), "{ip} is public");
        }
        for ip in ["10.0.0.1", "127.0.0.1", "172.16.5.4", "192.168.0.10", "100.64.1.1", "::1", "fd00::5"] {
            assert!(is_private_network(ip.parse().unwrap()), "{ip} is a private network");
        }
        for ip in ["169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1", "::ffff:10.0.0.1", "8.8.8.8"] {
            assert!(!is_private_network(ip.parse().unwrap()), "{ip} is not");
        }
    }
}
