//! Hyperparameter search: the space over a base job, its validation, the grid and random samplers
//! and the ASHA decisions. Pure functions; the controller that turns them into jobs lives in
//! `jobs::search`.

pub mod asha;
pub mod hyperband;
mod sampler;
pub mod space;

pub use asha::{Decision, decide, rungs};
pub use space::{
    CreateSearchRequest, Dimension, DimensionSpec, Method, ObjectiveSpec, SearchPlan, check, parse_path,
    set_path,
};

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::space::Step;
    use super::*;

    fn base_job() -> Value {
        json!({"model_id": "m", "dataset_id": "d", "validation": {"split": 0.2},
               "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy",
                           "metrics": ["accuracy"]},
               "fit": {"epochs": 9, "batch_size": 32, "shuffle": true, "seed": 1},
               "callbacks": []})
    }

    fn base_model() -> Value {
        json!({"input_shape": [64], "layers": [
            {"type": "dense", "units": 32, "activation": "relu", "use_bias": true},
            {"type": "dropout", "rate": 0.2},
            {"type": "dense", "units": 10, "activation": "softmax", "use_bias": true}]})
    }

    fn request(method: &str, space: Value) -> CreateSearchRequest {
        serde_json::from_value(json!({"base": base_job(), "space": space,
            "objective": {"metric": "val_loss"}, "method": method, "max_trials": 24}))
        .unwrap()
    }

    fn plan(req: &CreateSearchRequest) -> Result<SearchPlan, Vec<nn::FieldError>> {
        check(req, &base_job(), &base_model(), 1 << 30, 42)
    }

    use crate::nn;

    fn fields(errs: &[nn::FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    fn three_dims() -> Value {
        json!([
            {"path": "compile.optimizer.learning_rate", "type": "log_uniform", "low": 1e-4, "high": 1e-1},
            {"path": "model.layers[0].units", "type": "int", "low": 16, "high": 128, "step": 16},
            {"path": "model.layers[1].rate", "type": "uniform", "low": 0.0, "high": 0.5}
        ])
    }

    #[test]
    fn paths_parse_into_keys_and_indexes() {
        let p = parse_path("model.layers[2].rate").unwrap();
        assert!(p.model);
        assert_eq!(
            p.steps,
            vec![
                Step::Key("layers".into()),
                Step::Index(2),
                Step::Key("rate".into())
            ]
        );
        let p = parse_path("compile.optimizer.learning_rate").unwrap();
        assert!(!p.model);
        assert_eq!(p.steps.len(), 3);
        for bad in [
            "",
            "model",
            "dataset_id",
            "fit..epochs",
            "fit[x]",
            "fit[1",
            "a.b c",
            "fit[1]x",
        ] {
            assert!(parse_path(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_path(&"fit.a".repeat(100)).is_err());
    }

    #[test]
    fn setting_a_path_into_a_named_optimizer_makes_it_an_object() {
        let mut job = base_job();
        let p = parse_path("compile.optimizer.learning_rate").unwrap();
        set_path(&mut job, &p.steps, json!(0.01)).unwrap();
        assert_eq!(
            job["compile"]["optimizer"],
            json!({"type": "adam", "learning_rate": 0.01})
        );
        let p = parse_path("callbacks[0].patience").unwrap();
        assert!(
            set_path(&mut job, &p.steps, json!(1))
                .unwrap_err()
                .contains("past the end")
        );
    }

    #[test]
    fn random_trials_are_reproducible_from_the_seed_and_within_bounds() {
        let req = request("random", three_dims());
        let a = plan(&req).unwrap();
        let b = plan(&req).unwrap();
        assert_eq!(a.trial_count(), 24);
        let draws: Vec<_> = (0..24).map(|n| a.params(n)).collect();
        assert_eq!(draws, (0..24).map(|n| b.params(n)).collect::<Vec<_>>());
        // Another seed, other draws.
        let c = check(&req, &base_job(), &base_model(), 1 << 30, 43).unwrap();
        assert_ne!(draws[0], c.params(0));
        for p in &draws {
            let lr = p[0].as_f64().unwrap();
            assert!((1e-4..=1e-1).contains(&lr), "{lr}");
            let units = p[1].as_i64().unwrap();
            assert!((16..=128).contains(&units) && units % 16 == 0, "{units}");
            let rate = p[2].as_f64().unwrap();
            assert!((0.0..0.5).contains(&rate), "{rate}");
        }
        // log_uniform spreads over decades: some draws below 1e-3 and some above 1e-2.
        assert!(draws.iter().any(|p| p[0].as_f64().unwrap() < 1e-3));
        assert!(draws.iter().any(|p| p[0].as_f64().unwrap() > 1e-2));
        // Distinct values of units are drawn (8 possible).
        let mut units: Vec<i64> = draws.iter().map(|p| p[1].as_i64().unwrap()).collect();
        units.sort();
        units.dedup();
        assert!(units.len() >= 5, "{units:?}");
    }

    #[test]
    fn grid_enumerates_every_combination_once_last_dimension_fastest() {
        let req = request(
            "grid",
            json!([
                {"path": "compile.optimizer.type", "type": "choice", "values": ["adam", "sgd"]},
                {"path": "fit.batch_size", "type": "int", "low": 16, "high": 64, "step": 16},
                {"path": "model.layers[1].rate", "type": "uniform", "low": 0.0, "high": 0.4, "grid_points": 3}
            ]),
        );
        let p = plan(&req).unwrap();
        // 2 * 4 * 3 = 24.
        assert_eq!(p.trial_count(), 24);
        let all: Vec<_> = (0..24).map(|n| p.params(n)).collect();
        assert_eq!(all[0], vec![json!("adam"), json!(16), json!(0.0)]);
        assert_eq!(all[1], vec![json!("adam"), json!(16), json!(0.2)]);
        assert_eq!(all[3], vec![json!("adam"), json!(32), json!(0.0)]);
        assert_eq!(all[23], vec![json!("sgd"), json!(64), json!(0.4)]);
        let mut uniq = all
            .iter()
            .map(|v| v.iter().map(|x| x.to_string()).collect::<Vec<_>>())
            .collect::<Vec<_>>();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 24);
        // max_trials caps the grid.
        let mut small = req.clone();
        small.max_trials = 5;
        assert_eq!(plan(&small).unwrap().trial_count(), 5);
    }

    #[test]
    fn apply_sets_job_and_model_fields_and_leaves_the_model_alone_when_untouched() {
        let p = plan(&request("random", three_dims())).unwrap();
        let values = vec![json!(0.003), json!(64), json!(0.25)];
        let (job, model) = p.apply(&base_job(), &base_model(), &values).unwrap();
        assert_eq!(job["compile"]["optimizer"]["learning_rate"], json!(0.003));
        let model = model.unwrap();
        assert_eq!(model["layers"][0]["units"], json!(64));
        assert_eq!(model["layers"][1]["rate"], json!(0.25));
        assert_eq!(
            p.params_object(&values),
            json!({"compile.optimizer.learning_rate": 0.003, "model.layers[0].units": 64,
                   "model.layers[1].rate": 0.25})
        );
        let only_job = plan(&request(
            "random",
            json!([{"path": "fit.batch_size", "type": "choice", "values": [16, 32]}]),
        ))
        .unwrap();
        assert!(
            only_job
                .apply(&base_job(), &base_model(), &[json!(16)])
                .unwrap()
                .1
                .is_none()
        );
    }

    #[test]
    fn check_names_each_bad_field() {
        let mut req = request(
            "random",
            json!([
                {"path": "dataset_id", "type": "choice", "values": ["x"]},
                {"path": "fit.batch_size", "type": "int", "low": 64, "high": 16},
                {"path": "compile.optimizer.learning_rate", "type": "log_uniform", "low": 0.0, "high": 1.0},
                {"path": "model.layers[1].rate", "type": "uniform", "low": 0.0, "high": 1.5},
                {"path": "model.layers[0].units", "type": "uniform", "low": 8, "high": 16},
                {"path": "model.layers[7].units", "type": "int", "low": 8, "high": 16},
                {"path": "fit.epochs", "type": "choice", "values": []},
                {"path": "fit.shuffle", "type": "beta"},
                {"path": "model.layers[2].activation", "type": "choice", "values": ["relu", "swish"]},
                {"path": "fit.batch_size", "type": "int", "low": 1, "high": 4, "step": 0.5, "values": [1]}
            ]),
        );
        req.max_trials = 0;
        req.max_concurrent_trials = Some(1000);
        req.objective.metric = "f1".into();
        req.reduction_factor = Some(3);
        let errs = plan(&req).unwrap_err();
        assert_eq!(
            fields(&errs),
            vec![
                "max_trials",
                "max_concurrent_trials",
                "objective.metric",
                "reduction_factor",
                "space[0].path",
                "space[1].high",
                "space[2].low",
                "space[3].path",
                "space[4].path",
                "space[5].path",
                "space[6].values",
                "space[7].type",
                "space[8].path",
                "space[9].values",
                "space[9].step",
            ],
            "{errs:?}"
        );
        let msg = |i: usize| errs[i].message.clone();
        assert!(msg(7).contains("rate"), "{}", msg(7));
        assert!(msg(9).contains("past the end"), "{}", msg(9));
        assert!(msg(8).contains("model.layers[0].units"), "{}", msg(8));
        assert!(msg(12).contains("model.layers[2].activation"), "{}", msg(12));
    }

    #[test]
    fn check_refuses_objectives_the_base_job_does_not_report_and_grid_without_points() {
        let mut req = request("grid", three_dims());
        req.base.validation = None;
        req.objective.mode = Some("up".into());
        let errs = check(&req, &base_job(), &base_model(), 1 << 30, 1).unwrap_err();
        assert_eq!(
            fields(&errs),
            vec![
                "objective.metric",
                "objective.mode",
                "space[0].grid_points",
                "space[2].grid_points"
            ]
        );
        let mut req = request(
            "asha",
            json!([{"path": "fit.epochs", "type": "int", "low": 1, "high": 3}]),
        );
        req.min_epochs = Some(9);
        let errs = plan(&req).unwrap_err();
        assert_eq!(fields(&errs), vec!["min_epochs", "space[0].path"]);
    }

    #[test]
    fn asha_rungs_grow_by_the_reduction_factor_below_the_budget() {
        assert_eq!(rungs(1, 27, 3), vec![1, 3, 9]);
        assert_eq!(rungs(1, 9, 3), vec![1, 3]);
        assert_eq!(rungs(2, 20, 2), vec![2, 4, 8, 16]);
        assert_eq!(rungs(5, 5, 3), Vec::<u32>::new());
        let p = plan(&request("asha", three_dims())).unwrap();
        assert_eq!(
            p.method,
            Method::Asha {
                min_epochs: 1,
                max_epochs: 9,
                eta: 3
            }
        );
        let p = plan(&request("hyperband", three_dims())).unwrap();
        assert_eq!(
            p.method,
            Method::Hyperband {
                min_epochs: 1,
                max_epochs: 9,
                eta: 3
            }
        );
        assert_eq!(p.method.halving(), Some((1, 9, 3)));
        assert_eq!(
            plan(&request("random", three_dims())).unwrap().method.halving(),
            None
        );
    }

    #[test]
    fn asha_promotes_the_best_third_of_each_rung_as_trials_arrive() {
        use Decision::*;
        // The first arrival has no competition.
        assert_eq!(decide(&[], 0.5, 3, false), Promote);
        // With 2 results, floor(2/3) = 0 -> still keep 1: only the better one goes on.
        assert_eq!(decide(&[0.5], 0.7, 3, false), Stop);
        assert_eq!(decide(&[0.5], 0.4, 3, false), Promote);
        // With 6 results keep 2: promoted when at most one earlier is better.
        let earlier = [0.9, 0.3, 0.8, 0.7, 0.6];
        assert_eq!(decide(&earlier, 0.5, 3, false), Promote);
        assert_eq!(decide(&earlier, 0.65, 3, false), Stop);
        // Maximising accuracy.
        assert_eq!(decide(&[0.9, 0.8], 0.95, 3, true), Promote);
        assert_eq!(decide(&[0.9, 0.8], 0.85, 3, true), Stop);
        // NaN never goes on, and earlier NaNs do not count as better.
        assert_eq!(decide(&[], f64::NAN, 3, false), Stop);
        assert_eq!(decide(&[f64::NAN], 10.0, 3, false), Promote);
        // Replaying the same arrivals gives the same decisions.
        let arrivals = [0.8, 0.6, 0.9, 0.5, 0.7, 0.4, 0.95, 0.3, 0.65];
        let run = || {
            (0..arrivals.len())
                .map(|i| decide(&arrivals[..i], arrivals[i], 3, false))
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        assert_eq!(
            first,
            vec![
                Promote, Promote, Stop, Promote, Stop, Promote, Stop, Promote, Stop
            ]
        );
    }

    #[test]
    fn best_ignores_non_finite_values() {
        assert_eq!(asha::best([0.5, f64::NAN, 0.2, 0.3], false), Some((2, 0.2)));
        assert_eq!(asha::best([0.5, f64::NAN, 0.2, 0.7], true), Some((3, 0.7)));
        assert_eq!(asha::best([f64::NAN], true), None);
    }
}
