//! Reading the sensor's Prometheus endpoint, for the lab (`cargo xtask demo`) and the
//! integration tests alike.

use std::collections::BTreeMap;

use crate::lab::Netns;

/// `GET http://ADDR/metrics` from inside `ns` (curl, at most `timeout_secs`): the text
/// exposition, or why it could not be fetched.
pub fn scrape(ns: &Netns, addr: &str, timeout_secs: u32) -> Result<String, String> {
    ns.run(
        "curl",
        &[
            "-s",
            "--max-time",
            &timeout_secs.to_string(),
            &format!("http://{addr}/metrics"),
        ],
    )
}

/// The sum of the samples of metric `name` whose labels include every `(key, value)` of
/// `filter` (an empty filter: all its samples); 0 when there are none.
pub fn sum(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let labels: BTreeMap<&str, &str> = labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            filter
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::sum;

    #[test]
    fn sums_the_samples_whose_labels_match() {
        let text = "# HELP x_total X.\n# TYPE x_total counter\n\
                    x_total{kind=\"a\",proto=\"tcp\"} 2\nx_total{kind=\"b\",proto=\"tcp\"} 3\n\
                    x_total_other 7\ny 1.5\n";
        assert_eq!(sum(text, "x_total", &[]), 5.0);
        assert_eq!(sum(text, "x_total", &[("kind", "b")]), 3.0);
        assert_eq!(sum(text, "x_total", &[("kind", "c")]), 0.0);
        assert_eq!(sum(text, "y", &[]), 1.5);
        assert_eq!(sum(text, "x", &[]), 0.0, "a prefix is another metric");
    }
}
