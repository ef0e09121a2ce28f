use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn class(s: &str) -> Option<AddressClass> {
    classify(ip(s))
}

#[test]
fn ipv4_special_purpose_ranges() {
    use AddressClass::*;
    let cases = [
        ("0.0.0.0", Some(Unspecified)),
        ("0.1.2.3", Some(Unspecified)),
        ("127.0.0.1", Some(Loopback)),
        ("127.255.255.254", Some(Loopback)),
        ("169.254.169.254", Some(LinkLocal)),
        ("224.0.0.1", Some(Multicast)),
        ("239.255.255.255", Some(Multicast)),
        ("255.255.255.255", Some(Broadcast)),
        ("10.0.0.1", Some(Private)),
        ("10.255.255.255", Some(Private)),
        ("172.16.0.1", Some(Private)),
        ("172.31.255.255", Some(Private)),
        ("192.168.1.1", Some(Private)),
        ("100.64.0.1", Some(Shared)),
        ("100.127.255.255", Some(Shared)),
        ("192.0.2.1", Some(Documentation)),
        ("198.51.100.7", Some(Documentation)),
        ("203.0.113.9", Some(Documentation)),
        ("198.18.0.1", Some(Benchmarking)),
        ("198.19.255.255", Some(Benchmarking)),
        ("192.0.0.8", Some(Reserved)),
        ("240.0.0.1", Some(Reserved)),
        ("254.1.1.1", Some(Reserved)),
        // Globally reachable, including the neighbours of every range above.
        ("1.1.1.1", None),
        ("8.8.8.8", None),
        ("9.255.255.255", None),
        ("11.0.0.0", None),
        ("100.63.255.255", None),
        ("100.128.0.0", None),
        ("126.255.255.255", None),
        ("128.0.0.0", None),
        ("169.253.255.255", None),
        ("172.15.255.255", None),
        ("172.32.0.0", None),
        ("192.167.255.255", None),
        ("192.169.0.0", None),
        ("198.17.255.255", None),
        ("198.20.0.0", None),
        ("223.255.255.255", None),
    ];
    for (a, want) in cases {
        assert_eq!(class(a), want, "{a}");
    }
}

#[test]
fn ipv6_special_purpose_ranges() {
    use AddressClass::*;
    let cases = [
        ("::", Some(Unspecified)),
        ("::1", Some(Loopback)),
        ("::2", Some(Reserved)),
        ("::10.0.0.1", Some(Reserved)),
        ("fe80::1", Some(LinkLocal)),
        ("febf::1", Some(LinkLocal)),
        ("fec0::1", Some(Private)),
        ("fc00::1", Some(Private)),
        ("fd12:3456::1", Some(Private)),
        ("ff02::1", Some(Multicast)),
        ("ff0e::101", Some(Multicast)),
        ("2001:db8::25", Some(Documentation)),
        ("3fff::1", Some(Documentation)),
        ("3fff:fff::1", Some(Documentation)),
        ("2001:2::1", Some(Benchmarking)),
        ("2001::1", Some(Reserved)),
        ("2001:1ff::1", Some(Reserved)),
        ("64:ff9b:1::1", Some(Reserved)),
        ("100::1", Some(Reserved)),
        ("5f00::1", Some(Reserved)),
        ("2001:4860:4860::8888", None),
        ("2a00:1450::1", None),
        ("2001:200::1", None),
        ("3fff:1000::1", None),
        ("fbff::1", None),
        ("fe00::1", None),
        ("2606:4700::1111", None),
    ];
    for (a, want) in cases {
        assert_eq!(class(a), want, "{a}");
    }
}

#[test]
fn ipv4_mapped_and_nat64_addresses_are_judged_by_their_ipv4_address() {
    use AddressClass::*;
    assert_eq!(class("::ffff:127.0.0.1"), Some(Loopback));
    assert_eq!(class("::ffff:7f00:1"), Some(Loopback));
    assert_eq!(class("::ffff:10.1.2.3"), Some(Private));
    assert_eq!(class("::ffff:169.254.169.254"), Some(LinkLocal));
    assert_eq!(class("::ffff:0.0.0.0"), Some(Unspecified));
    assert_eq!(class("::ffff:8.8.8.8"), None);
    assert_eq!(class("64:ff9b::127.0.0.1"), Some(Loopback));
    assert_eq!(class("64:ff9b::192.168.0.1"), Some(Private));
    assert_eq!(class("64:ff9b::8.8.8.8"), None);
}

#[test]
fn default_policy_refuses_every_special_address_and_says_why() {
    let (p, bad) = DestinationPolicy::new::<&str>(&[]);
    assert!(bad.is_empty());
    let e = p.check(ip("127.0.0.1")).unwrap_err();
    assert_eq!(e.class, AddressClass::Loopback);
    assert_eq!(
        e.text(),
        "destination address 127.0.0.1 is not allowed (loopback)"
    );
    assert_eq!(
        p.check(ip("::ffff:127.0.0.1")).unwrap_err().class,
        AddressClass::Loopback
    );
    for a in [
        "10.0.0.5",
        "fd00::5",
        "100.64.1.1",
        "169.254.169.254",
        "::1",
    ] {
        assert!(p.check(ip(a)).is_err(), "{a}");
    }
    assert_eq!(p.check(ip("8.8.8.8")), Ok(()));
    assert_eq!(p.check(ip("2a00:1450::1")), Ok(()));
}

#[test]
fn exceptions_allow_listed_networks_but_never_unspecified_multicast_or_broadcast() {
    let (p, bad) = DestinationPolicy::new(&["127.0.0.0/8", "fd00::/8", "10.1.2.3", "bogus"]);
    assert_eq!(bad, vec!["bogus".to_string()]);
    assert_eq!(p.check(ip("127.0.0.3")), Ok(()));
    assert_eq!(p.check(ip("::ffff:127.0.0.3")), Ok(()), "mapped form too");
    assert_eq!(p.check(ip("fd00::25")), Ok(()));
    assert_eq!(p.check(ip("10.1.2.3")), Ok(()));
    assert!(p.check(ip("10.1.2.4")).is_err());
    assert!(p.check(ip("::1")).is_err(), "::1 is not in 127.0.0.0/8");
    let (wide, _) = DestinationPolicy::new(&["0.0.0.0/0", "::/0"]);
    for a in ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255"] {
        assert!(wide.check(ip(a)).is_err(), "{a} is never allowed");
    }
    assert_eq!(wide.check(ip("192.168.0.1")), Ok(()));
}

#[test]
fn domain_parts() {
    assert_eq!(domain_part("example.com"), DomainPart::Name);
    assert_eq!(
        domain_part("[127.0.0.1]"),
        DomainPart::Literal(ip("127.0.0.1"))
    );
    assert_eq!(domain_part("[IPv6:::1]"), DomainPart::Literal(ip("::1")));
    assert_eq!(
        domain_part("[ipv6:2001:db8::1]"),
        DomainPart::Literal(ip("2001:db8::1"))
    );
    assert_eq!(domain_part("[::1]"), DomainPart::BadLiteral, "needs IPv6:");
    assert_eq!(domain_part("[IPv6:1.2.3.4]"), DomainPart::BadLiteral);
    assert_eq!(domain_part("[x-tag:abc]"), DomainPart::BadLiteral);
    assert_eq!(domain_part("[300.1.1.1]"), DomainPart::BadLiteral);
    assert_eq!(domain_part("[]"), DomainPart::BadLiteral);
}
