//! Which partition of the events and actions topics carries a
//! jurisdiction. Producers key those topics by jurisdiction, and the bus
//! producer hashes keys as Kafka's Java client does (`murmur2_random`:
//! `(murmur2(key) & 0x7fffffff) % partitions`), so any Kafka client lands a
//! jurisdiction on the same partition. The router repeats that computation
//! to know which jurisdictions — and so which open incidents and clocks —
//! it owns after a rebalance.
//!
//! Must stay the producer's choice bit for bit (see `bus::kafka::producer`
//! `PARTITIONER`), or two routers would both believe they own an incident.

/// Kafka's murmur2 (the Java client's `Utils.murmur2`).
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ (data.len() as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition a record keyed by `jurisdiction` lands on.
pub fn partition_of(jurisdiction: &str, partitions: i32) -> i32 {
    let n = u32::try_from(partitions.max(1)).unwrap_or(1);
    ((murmur2(jurisdiction.as_bytes()) & 0x7fff_ffff) % n) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_clients_test_vectors() {
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }

    #[test]
    fn jurisdictions_land_where_librdkafka_put_them() {
        // Observed from the bus producer against the embedded broker.
        let seen = [
            ("quancheng", 2),
            ("daminghu", 0),
            ("baotuquan", 0),
            ("jiefangqiao", 1),
            ("qianfoshan", 0),
            ("dikou", 0),
            ("shiju", 2),
        ];
        for (j, p) in seen {
            assert_eq!(partition_of(j, 3), p, "{j}");
            assert_eq!(partition_of(j, 1), 0);
        }
    }
}
