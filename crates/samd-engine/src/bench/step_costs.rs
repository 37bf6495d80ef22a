//! A device's verify-step time by node count, given rather than measured: trace replay
//! with it stands for a run on that device, tree budget and speedups included, where no
//! such device is at hand.

use std::fmt;
use std::str::FromStr;

/// Step times at a few node counts (`samd profile --sizes` on the device), linear between
/// them and along the last segment past them.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCosts {
    /// `(nodes, microseconds)`, nodes ascending from 1.
    points: Vec<(usize, f64)>,
}

impl StepCosts {
    /// The time of a step that computes `nodes` nodes, in microseconds.
    pub fn micros(&self, nodes: usize) -> f64 {
        let n = nodes.max(1) as f64;
        let segment = self
            .points
            .windows(2)
            .find(|w| nodes <= w[1].0)
            .or_else(|| self.points.windows(2).last());
        match segment {
            Some(&[(n0, t0), (n1, t1)]) => t0 + (t1 - t0) * (n - n0 as f64) / (n1 - n0) as f64,
            // One point: every step costs what a one-node step does.
            _ => self.points[0].1,
        }
    }
}

impl FromStr for StepCosts {
    type Err = String;

    /// Parses `nodes:ms` pairs, comma-separated, node counts ascending from 1: say
    /// `1:6.36,2:7.71,16:12.32,64:26.51`.
    fn from_str(spec: &str) -> Result<Self, String> {
        let mut points: Vec<(usize, f64)> = Vec::new();
        for pair in spec.split(',').map(str::trim) {
            let (nodes, ms) = pair
                .split_once(':')
                .ok_or_else(|| format!("{pair:?} is not nodes:ms"))?;
            let nodes: usize = nodes
                .trim()
                .parse()
                .map_err(|_| format!("{nodes:?} in {pair:?} is not a node count"))?;
            let ms: f64 = ms
                .trim()
                .parse()
                .map_err(|_| format!("{ms:?} in {pair:?} is not milliseconds"))?;
            if !(ms.is_finite() && ms > 0.0) {
                return Err(format!("{pair:?}: a step takes a positive time"));
            }
            match points.last() {
                None if nodes != 1 => {
                    return Err(format!(
                        "the first pair is {pair:?}: it must be a one-node step's (1:ms)"
                    ));
                }
                Some(&(last, _)) if nodes <= last => {
                    return Err(format!("{pair:?}: node counts must ascend"));
                }
                _ => points.push((nodes, ms * 1e3)),
            }
        }
        Ok(Self { points })
    }
}

impl fmt::Display for StepCosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (nodes, us)) in self.points.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{nodes}:{}", us / 1e3)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_interpolate_between_points_and_extend_the_last_segment() {
        let costs: StepCosts = "1:6, 2:8 ,16:12,64:24".parse().unwrap();
        assert_eq!(costs.micros(1), 6_000.0);
        assert_eq!(costs.micros(2), 8_000.0);
        assert_eq!(costs.micros(9), 10_000.0);
        assert_eq!(costs.micros(40), 18_000.0);
        assert_eq!(costs.micros(128), 40_000.0);
        assert_eq!(costs.to_string(), "1:6,2:8,16:12,64:24");
        let flat: StepCosts = "1:5".parse().unwrap();
        assert_eq!(flat.micros(100), 5_000.0);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, says) in [
            ("2:5,4:6", "one-node"),
            ("1:5,4:6,3:7", "ascend"),
            ("1:5,2:-1", "positive"),
            ("1:5,2", "nodes:ms"),
            ("1:x", "milliseconds"),
            ("one:5", "node count"),
            ("", "nodes:ms"),
        ] {
            let err = spec.parse::<StepCosts>().unwrap_err();
            assert!(err.contains(says), "{spec:?}: {err}");
        }
    }
}
