use super::*;

#[test]
fn times_are_written_as_zeek_and_suricata_write_them() {
    let ns = 1_602_707_363_476_578_123;
    assert_eq!(zeek_time(ns), "1602707363.476578");
    assert_eq!(suricata_time(ns), "2020-10-14T20:29:23.476578+0000");
    assert_eq!(
        zeek_header_time(UNIX_EPOCH + Duration::from_secs(1_602_707_363)),
        "2020-10-14-20-29-23"
    );
}

#[test]
fn fields_and_types_match() {
    assert_eq!(ZEEK_FIELDS.len(), ZEEK_TYPES.len());
}
