use sensor::{dataset, features::cold_contexts::COLD_CONTEXTS, kdd::FLAGS, model::Model};
fn main() {
    let m = Model::load(std::path::Path::new("models/nsl-kdd-flow.model")).unwrap();
    let t = m.data().thresholds;
    let l = dataset::load(
        std::path::Path::new("../shared/data/nsl-kdd/KDDTrain+.txt"),
        Default::default(),
    )
    .unwrap();
    let split = dataset::stratified_split(&l.samples, 42);
    let (mut warm, mut cold) = (Vec::new(), Vec::new()); // (s,u,attack)
    for &i in &split.validation {
        let s = &l.samples[i];
        let f = s.features.0;
        let flag = FLAGS[f[3] as usize];
        let syn = if matches!(flag, "S0" | "S1" | "S2" | "S3") {
            1.0
        } else {
            0.0
        };
        let rej = if flag == "REJ" { 1.0 } else { 0.0 };
        let mut x = Vec::new();
        m.push_inputs(&s.features, &mut x);
        let v = m.score_inputs_batch(&x)[0];
        warm.push((
            v.supervised_score,
            v.unsupervised_score.unwrap(),
            s.is_attack(),
        ));
        let mut x = Vec::new();
        for p in &COLD_CONTEXTS {
            let u = 254.0;
            let h = 1.0 + u * p.host;
            let sv = 1.0 + u * p.service;
            let hs = 1.0 + u * p.host_service;
            let hp = 1.0 + u * p.host_src_port;
            let r = |a: f64, b: f64| {
                if b <= 0.0 {
                    0.0
                } else {
                    ((a / b).clamp(0.0, 1.0) * 100.0).round() / 100.0
                }
            };
            let mut g = s.features;
            g.0[31] = h.round().min(255.0);
            g.0[32] = sv.round().min(255.0);
            g.0[33] = r(hs, h);
            g.0[34] = r(h - hs, h);
            g.0[35] = r(hp, h);
            g.0[36] = r(sv - hs, sv);
            g.0[37] = r(syn + u * p.host_syn, h);
            g.0[38] = r(syn + u * p.service_syn, sv);
            g.0[39] = r(rej + u * p.host_rej, h);
            g.0[40] = r(rej + u * p.service_rej, sv);
            m.push_inputs(&g, &mut x);
        }
        let vs = m.score_inputs_batch(&x);
        let n = vs.len() as f64;
        cold.push((
            vs.iter().map(|v| v.supervised_score).sum::<f64>() / n,
            vs.iter()
                .map(|v| v.unsupervised_score.unwrap())
                .sum::<f64>()
                / n,
            s.is_attack(),
        ));
    }
    for (name, sc) in [("warm", &warm), ("cold", &cold)] {
        let nn = sc.iter().filter(|x| !x.2).count() as f64;
        let na = sc.iter().filter(|x| x.2).count() as f64;
        let fp = sc
            .iter()
            .filter(|x| !x.2 && (x.0 >= t.supervised || x.1 >= t.unsupervised))
            .count() as f64;
        let tp = sc
            .iter()
            .filter(|x| x.2 && (x.0 >= t.supervised || x.1 >= t.unsupervised))
            .count() as f64;
        let fps = sc.iter().filter(|x| !x.2 && x.0 >= t.supervised).count() as f64;
        let fpu = sc.iter().filter(|x| !x.2 && x.1 >= t.unsupervised).count() as f64;
        println!(
            "{name}: FPR {:.2}% (forest {:.2}%, profile {:.2}%), recall {:.2}%",
            100.0 * fp / nn,
            100.0 * fps / nn,
            100.0 * fpu / nn,
            100.0 * tp / na
        );
        let mut ns: Vec<f64> = sc.iter().filter(|x| !x.2).map(|x| x.0).collect();
        ns.sort_by(f64::total_cmp);
        let mut nu: Vec<f64> = sc.iter().filter(|x| !x.2).map(|x| x.1).collect();
        nu.sort_by(f64::total_cmp);
        for q in [0.95, 0.98, 0.99] {
            println!(
                "  normal q{q}: forest {:.4} profile {:.4}",
                ns[(q * nn) as usize],
                nu[(q * nn) as usize]
            );
        }
    }
    println!("thresholds {:?}", t);
}
