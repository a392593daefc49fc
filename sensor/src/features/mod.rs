//! The KDD feature engine: finished connections ([`ConnectionRecord`]) in, 41-column
//! [`KddFeatures`] out, in the semantics and ranges of the NSL-KDD training data.
//!
//! One file per feature family: [`basic`] (1-9 and the flag mapping), [`service`] (port / ICMP
//! type -> service), [`time_window`] (23-31), [`host_window`] (32-41); [`counts`] holds the
//! incremental counters both windows share.
//!
//! * Content features 10-22 are always 0: a header-only sensor does not observe login sessions.
//!   Deployed models use [`crate::kdd::FeatureSet::Flow`], which leaves them out.
//! * Rates are rounded to 2 decimals by default ([`FeatureConfig::round_rates`]): the data prints
//!   two decimals, so trees learned thresholds between those values (e.g. 0.995); unrounded rates
//!   such as 0.996 would fall on the other side of a split the model never saw fall that way.
//! * Each [`FeatureEngine::push`] costs O(1) amortized (a few hash-map updates per window) and the
//!   engine's memory is bounded by its two window caps, not by the number of distinct hosts.

pub mod basic;
pub mod counts;
pub mod host_window;
pub mod service;
pub mod time_window;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use crate::{
    flows::ConnectionRecord,
    kdd::{KddFeatures, NUM_FEATURES},
};

use counts::{HostKey, WindowEntry, WindowView};
use host_window::HostWindow;
use time_window::TimeWindow;

/// Saturation of `count` and `srv_count` (the data's maximum).
pub const TIME_COUNT_MAX: u32 = 511;
/// Saturation of `dst_host_count` and `dst_host_srv_count` (the data's maximum).
pub const HOST_COUNT_MAX: u32 = 255;

/// Engine settings. Defaults reproduce the training data's semantics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureConfig {
    /// Length of the time-based window (KDD: 2 s).
    pub time_window_ns: u64,
    /// Cap on connections held in the time-based window; bounds its memory at high rates.
    /// Each held connection costs about 250 heap bytes (queue entry plus its share of the
    /// per-host maps, measured by `a_million_distinct_hosts_stay_bounded`), so the default
    /// 2^20 (a full 2 s window up to 524,288 connections/s) costs at most about 260 MB; lower it
    /// on small machines: past the cap the window covers less than 2 s and the early expiries are
    /// counted in [`EngineStats::time_window_overflow_evictions_total`].
    pub max_time_window_connections: usize,
    /// Connections in the host-based window, the current one included (see [`host_window`]).
    pub host_window_connections: usize,
    /// Unnamed TCP/UDP ports below this are `private`, the rest `other` (see [`service`]).
    pub private_port_below: u16,
    /// Round rates to 2 decimals as the data files print them.
    pub round_rates: bool,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            time_window_ns: 2_000_000_000,
            max_time_window_connections: 1 << 20,
            host_window_connections: 255,
            private_port_below: 1024,
            round_rates: true,
        }
    }
}

/// A setting the engine cannot run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeatureConfigError {
    #[error("time window must be longer than 0 ns")]
    EmptyTimeWindow,
    #[error("window capacity {field} must be at least 1 (the current connection)")]
    EmptyWindow { field: &'static str },
}

impl FeatureConfig {
    fn validate(&self) -> Result<(), FeatureConfigError> {
        if self.time_window_ns == 0 {
            return Err(FeatureConfigError::EmptyTimeWindow);
        }
        if self.max_time_window_connections == 0 {
            return Err(FeatureConfigError::EmptyWindow {
                field: "max_time_window_connections",
            });
        }
        if self.host_window_connections == 0 {
            return Err(FeatureConfigError::EmptyWindow {
                field: "host_window_connections",
            });
        }
        Ok(())
    }
}

/// Health and size figures of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineStats {
    pub connections_total: u64,
    /// Time-window entries expired early because of `max_time_window_connections`.
    pub time_window_overflow_evictions_total: u64,
    pub time_window_connections: usize,
    pub time_window_hosts: usize,
    pub host_window_hosts: usize,
    /// Heap bytes held by the windows (capacity-based estimate).
    pub heap_bytes: usize,
}

/// Turns finished connections into KDD feature vectors; see the module docs.
#[derive(Debug)]
pub struct FeatureEngine {
    config: FeatureConfig,
    time: TimeWindow,
    host: HostWindow,
    connections_total: u64,
}

/// The window key of an address: IPv4 as v4-mapped IPv6, so both families share one map.
pub fn host_key(addr: IpAddr) -> HostKey {
    match addr {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl FeatureEngine {
    pub fn new(config: FeatureConfig) -> Result<FeatureEngine, FeatureConfigError> {
        config.validate()?;
        Ok(FeatureEngine {
            time: TimeWindow::new(config.time_window_ns, config.max_time_window_connections),
            host: HostWindow::new(config.host_window_connections),
            config,
            connections_total: 0,
        })
    }

    /// Computes the 41 features of a finished connection and adds it to the windows.
    pub fn push(&mut self, rec: &ConnectionRecord) -> KddFeatures {
        let mut out = [0.0; NUM_FEATURES];
        let flag = basic::flag_index(rec.transport, rec.conn_state);
        let service = service::service_index(rec, self.config.private_port_below);
        basic::fill_basic(rec, flag, &mut out);
        out[2] = f64::from(service);

        let entry = WindowEntry {
            host: host_key(rec.resp_addr),
            service,
            syn_error: basic::is_syn_error(flag),
            rej_error: basic::is_rej_error(flag),
            src_port: rec.orig_port,
        };
        let round = self.config.round_rates;
        let r = |num: u32, den: u32| rate(num, den, round);

        let t = self.time.push(rec.end_unix_ns, entry);
        out[22] = f64::from(t.host.n.min(TIME_COUNT_MAX));
        out[23] = f64::from(t.service.n.min(TIME_COUNT_MAX));
        out[24] = r(t.host.syn_errors, t.host.n);
        out[25] = r(t.service.syn_errors, t.service.n);
        out[26] = r(t.host.rej_errors, t.host.n);
        out[27] = r(t.service.rej_errors, t.service.n);
        out[28] = r(t.host_service, t.host.n);
        out[29] = r(t.host.n - t.host_service, t.host.n);
        out[30] = r(t.service.n - t.host_service, t.service.n);

        let h: WindowView = self.host.push(entry);
        out[31] = f64::from(h.host.n.min(HOST_COUNT_MAX));
        out[32] = f64::from(h.service.n.min(HOST_COUNT_MAX));
        out[33] = r(h.host_service, h.host.n);
        out[34] = r(h.host.n - h.host_service, h.host.n);
        out[35] = r(h.host_src_port, h.host.n);
        out[36] = r(h.service.n - h.host_service, h.service.n);
        out[37] = r(h.host.syn_errors, h.host.n);
        out[38] = r(h.service.syn_errors, h.service.n);
        out[39] = r(h.host.rej_errors, h.host.n);
        out[40] = r(h.service.rej_errors, h.service.n);

        self.connections_total += 1;
        KddFeatures(out)
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            connections_total: self.connections_total,
            time_window_overflow_evictions_total: self.time.overflow_evictions(),
            time_window_connections: self.time.len(),
            time_window_hosts: self.time.hosts(),
            host_window_hosts: self.host.hosts(),
            heap_bytes: self.time.heap_bytes() + self.host.heap_bytes(),
        }
    }
}

/// `num / den` in [0, 1], rounded to 2 decimals if `round`; 0 for an empty denominator (cannot
/// happen for the current connection's own groups, which include it).
#[inline]
pub fn rate(num: u32, den: u32, round: bool) -> f64 {
    if den == 0 {
        return 0.0;
    }
    let x = f64::from(num) / f64::from(den);
    if round {
        (x * 100.0).round() / 100.0
    } else {
        x
    }
}
