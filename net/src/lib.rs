//! IPv4 CIDR blocks, shared by the apiserver (the Service range), the controllers (node IPAM)
//! and the kubelet (its podCIDR). Each checks the prefix lengths its flag allows.

use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network `base/prefix` (host bits of `base` zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

/// Text that is not `a.b.c.d/n` with n ≤ 32.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseCidrError(pub String);

impl std::fmt::Display for ParseCidrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} is not an IPv4 CIDR (a.b.c.d/n)", self.0)
    }
}

impl std::error::Error for ParseCidrError {}

impl Cidr {
    /// The network of `ip` with `prefix` bits (host bits cleared); None past 32 bits.
    pub fn new(ip: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then(|| Self {
            base: u32::from(ip) & mask(prefix),
            prefix,
        })
    }

    /// The network address.
    pub fn base(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The number of addresses in the network.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Whether `ip` lies inside the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.base
    }

    /// Whether `ip` is a usable address of the network (not its network or broadcast address).
    pub fn contains_usable(&self, ip: Ipv4Addr) -> bool {
        let offset = u64::from(u32::from(ip).wrapping_sub(self.base));
        self.contains(ip) && offset > 0 && offset < self.size() - 1
    }

    /// The `n`th address of the network.
    pub fn nth(&self, n: u64) -> Ipv4Addr {
        Ipv4Addr::from(self.base.wrapping_add(n as u32))
    }

    /// The `index`th subnet of prefix length `prefix` inside this network.
    pub fn subnet(&self, prefix: u8, index: u64) -> Option<Cidr> {
        if prefix < self.prefix || prefix > 32 || index >= 1u64 << (prefix - self.prefix) {
            return None;
        }
        let offset = u32::try_from(index << (32 - u32::from(prefix))).ok()?;
        Some(Cidr {
            base: self.base + offset,
            prefix,
        })
    }

    /// Which subnet of this network `sub` is (the inverse of [`Cidr::subnet`]).
    pub fn subnet_index(&self, sub: &Cidr) -> Option<u64> {
        (sub.prefix >= self.prefix && self.contains(sub.base()))
            .then(|| u64::from(sub.base - self.base) >> (32 - u32::from(sub.prefix)))
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, ParseCidrError> {
        let bad = || ParseCidrError(s.to_string());
        let (ip, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Cidr::new(ip, prefix).ok_or_else(bad)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_clears_host_bits_and_refuses_what_is_not_a_cidr() {
        let c: Cidr = "127.128.5.6/9".parse().unwrap();
        assert_eq!(c.to_string(), "127.128.0.0/9");
        assert_eq!(c.size(), 1 << 23);
        for bad in ["127.0.0.1", "127.0.0.0/33", "::1/64", "x/8", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(
            "x".parse::<Cidr>().unwrap_err().to_string(),
            "\"x\" is not an IPv4 CIDR (a.b.c.d/n)"
        );
    }

    #[test]
    fn contains_usable_addresses_and_subnets() {
        let c: Cidr = "127.96.0.0/12".parse().unwrap();
        assert!(c.contains(ip("127.96.0.0")) && c.contains(ip("127.111.255.255")));
        assert!(!c.contains(ip("127.112.0.0")));
        assert!(!c.contains_usable(ip("127.96.0.0")));
        assert!(c.contains_usable(ip("127.96.0.1")));
        assert!(!c.contains_usable(ip("127.111.255.255")));
        assert_eq!(c.nth(1), ip("127.96.0.1"));

        let sub = c.subnet(20, 3).unwrap();
        assert_eq!(sub.to_string(), "127.96.48.0/20");
        assert_eq!(c.subnet_index(&sub), Some(3));
        assert_eq!(c.subnet(20, 256), None);
        assert_eq!(c.subnet(8, 0), None);
        let outside: Cidr = "10.0.0.0/20".parse().unwrap();
        assert_eq!(c.subnet_index(&outside), None);
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
    }
}
