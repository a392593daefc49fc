//! The KDD'99 / NSL-KDD connection feature space, shared by training (ETL of the data files) and
//! live scoring (the feature engine): one definition of names, order and vocabularies.
//!
//! See `../shared/docs/kdd-features.md`. Vocabularies are versioned: a model file records
//! [`VOCABULARY_VERSION`] and refuses to load against another.

/// Bumped whenever a vocabulary below changes (order or content).
pub const VOCABULARY_VERSION: u32 = 1;

/// Number of KDD features.
pub const NUM_FEATURES: usize = 41;

/// The 41 feature names in NSL-KDD column order.
pub const FEATURE_NAMES: [&str; NUM_FEATURES] = [
    "duration",
    "protocol_type",
    "service",
    "flag",
    "src_bytes",
    "dst_bytes",
    "land",
    "wrong_fragment",
    "urgent",
    "hot",
    "num_failed_logins",
    "logged_in",
    "num_compromised",
    "root_shell",
    "su_attempted",
    "num_root",
    "num_file_creations",
    "num_shells",
    "num_access_files",
    "num_outbound_cmds",
    "is_host_login",
    "is_guest_login",
    "count",
    "srv_count",
    "serror_rate",
    "srv_serror_rate",
    "rerror_rate",
    "srv_rerror_rate",
    "same_srv_rate",
    "diff_srv_rate",
    "srv_diff_host_rate",
    "dst_host_count",
    "dst_host_srv_count",
    "dst_host_same_srv_rate",
    "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate",
    "dst_host_srv_diff_host_rate",
    "dst_host_serror_rate",
    "dst_host_srv_serror_rate",
    "dst_host_rerror_rate",
    "dst_host_srv_rerror_rate",
];

/// Indices (0-based) of the features a header-only flow sensor computes: KDD 1-9 and 23-41.
/// The content features 10-22 need payload inspection and are not observed live.
pub const FLOW_FEATURE_INDICES: [usize; 28] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38,
    39, 40,
];

/// Column indices of the categorical features.
pub const PROTOCOL_TYPE: usize = 1;
/// Column index of `service`.
pub const SERVICE: usize = 2;
/// Column index of `flag`.
pub const FLAG: usize = 3;

/// `protocol_type` vocabulary.
pub const PROTOCOLS: [&str; 3] = ["tcp", "udp", "icmp"];

/// `service` vocabulary: the 70 services of NSL-KDD (KDDTrain+ and KDDTest+), sorted.
pub const SERVICES: [&str; 70] = [
    "IRC",
    "X11",
    "Z39_50",
    "aol",
    "auth",
    "bgp",
    "courier",
    "csnet_ns",
    "ctf",
    "daytime",
    "discard",
    "domain",
    "domain_u",
    "echo",
    "eco_i",
    "ecr_i",
    "efs",
    "exec",
    "finger",
    "ftp",
    "ftp_data",
    "gopher",
    "harvest",
    "hostnames",
    "http",
    "http_2784",
    "http_443",
    "http_8001",
    "imap4",
    "iso_tsap",
    "klogin",
    "kshell",
    "ldap",
    "link",
    "login",
    "mtp",
    "name",
    "netbios_dgm",
    "netbios_ns",
    "netbios_ssn",
    "netstat",
    "nnsp",
    "nntp",
    "ntp_u",
    "other",
    "pm_dump",
    "pop_2",
    "pop_3",
    "printer",
    "private",
    "red_i",
    "remote_job",
    "rje",
    "shell",
    "smtp",
    "sql_net",
    "ssh",
    "sunrpc",
    "supdup",
    "systat",
    "telnet",
    "tftp_u",
    "tim_i",
    "time",
    "urh_i",
    "urp_i",
    "uucp",
    "uucp_path",
    "vmnet",
    "whois",
];

/// `flag` vocabulary: the 11 Zeek `conn_state` values NSL-KDD uses.
pub const FLAGS: [&str; 11] = [
    "OTH", "REJ", "RSTO", "RSTOS0", "RSTR", "S0", "S1", "S2", "S3", "SF", "SH",
];

/// Which features a model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureSet {
    /// The 28 features the sensor computes from headers (deployed models).
    Flow,
    /// All 41 (comparison only: the content features are not observed live).
    All,
}

impl FeatureSet {
    /// Column indices, in model input order.
    pub fn indices(self) -> &'static [usize] {
        static ALL: [usize; NUM_FEATURES] = {
            let mut a = [0usize; NUM_FEATURES];
            let mut i = 0;
            while i < NUM_FEATURES {
                a[i] = i;
                i += 1;
            }
            a
        };
        match self {
            FeatureSet::Flow => &FLOW_FEATURE_INDICES,
            FeatureSet::All => &ALL,
        }
    }

    /// Feature names, in model input order.
    pub fn names(self) -> Vec<&'static str> {
        self.indices().iter().map(|&i| FEATURE_NAMES[i]).collect()
    }
}

/// Index of `name` in `vocabulary`.
pub fn vocab_index(vocabulary: &[&str], name: &str) -> Option<usize> {
    vocabulary.iter().position(|v| *v == name)
}

/// One connection's 41 KDD features in NSL-KDD column order. Categorical features
/// ([`PROTOCOL_TYPE`], [`SERVICE`], [`FLAG`]) hold their index in the vocabularies above;
/// everything else holds the value exactly as the data files print it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KddFeatures(pub [f64; NUM_FEATURES]);

impl KddFeatures {
    /// Index of the `service` (column 3) in [`SERVICES`].
    pub fn service_index(&self) -> u8 {
        self.0[2] as u8
    }

    /// Index of the `flag` (column 4) in [`FLAGS`].
    pub fn flag_index(&self) -> u8 {
        self.0[3] as u8
    }

    /// The values of a feature set, in model input order.
    pub fn select(&self, set: FeatureSet) -> impl Iterator<Item = f64> + '_ {
        set.indices().iter().map(|&i| self.0[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_are_unique_and_flow_set_is_consistent() {
        for v in [&PROTOCOLS[..], &SERVICES[..], &FLAGS[..]] {
            let mut s = v.to_vec();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), v.len());
        }
        assert_eq!(FeatureSet::Flow.names()[9], "count");
        assert_eq!(FeatureSet::Flow.names()[27], "dst_host_srv_rerror_rate");
        assert_eq!(FeatureSet::All.indices().len(), 41);
        assert_eq!(FEATURE_NAMES[PROTOCOL_TYPE], "protocol_type");
        assert_eq!(FEATURE_NAMES[SERVICE], "service");
        assert_eq!(FEATURE_NAMES[FLAG], "flag");
    }
}
