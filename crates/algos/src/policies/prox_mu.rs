//! `prox-mu`: sets each client's FedProx coefficient μ_k in its plan
//! ([`RatePlan::prox_mu`](fedpace_core::RatePlan::prox_mu), docs/algorithms.md §B.1) and leaves
//! its rates alone, so it composes with every rate policy (inside `compose`) and every
//! strategy whose client honours the plan's μ (the standard client adds
//! `μ_k·(w − x^t)` to every local gradient).
//!
//! `μ_k = clients[k]` if the client is named, else `devices[class_k]` if its device
//! class is named, else `μ·(n_k/n̄)^γ` with `μ` the configured `mu` (default: the
//! plan's own μ, e.g. `strategy.mu` under FedProx) and n̄ the pool's mean training-set
//! size. γ > 0 pulls clients with more data (hence more local steps and more drift)
//! harder towards the global model; γ = 0 (default) gives everyone μ.

use fedpace_core::{ClientInfo, ClientPool, RatePlan, RatePolicy, Result};
use std::collections::BTreeMap;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct ProxMu {
    /// μ before data-size scaling (`None`: the plan's μ).
    pub mu: Option<f64>,
    /// Data-size exponent γ.
    pub gamma: f64,
    /// μ per device class.
    pub devices: BTreeMap<String, f64>,
    /// μ per client id (wins over `devices`).
    pub clients: BTreeMap<u64, f64>,
    /// n̄, set by `start`.
    pub mean_n: f64,
}

impl ProxMu {
    /// Client `c`'s μ given the plan's μ.
    pub fn mu_for(&self, c: &ClientInfo, plan_mu: f64) -> f64 {
        if let Some(m) = self.clients.get(&c.id) {
            return *m;
        }
        if let Some(m) = c.device.as_ref().and_then(|d| self.devices.get(d)) {
            return *m;
        }
        let mu = self.mu.unwrap_or(plan_mu);
        if self.gamma == 0.0 || self.mean_n <= 0.0 || c.num_train == 0 {
            return mu;
        }
        mu * (c.num_train as f64 / self.mean_n).powf(self.gamma)
    }
}

impl RatePolicy for ProxMu {
    fn describe(&self) -> String {
        let mu = self.mu.map_or("plan".to_string(), |m| m.to_string());
        format!(
            "prox-mu(μ={mu}, γ={}, {} device classes, {} clients)",
            self.gamma,
            self.devices.len(),
            self.clients.len()
        )
    }
    fn start(&mut self, pool: &dyn ClientPool) -> Result<()> {
        let total = pool.total_train()?;
        self.mean_n = total as f64 / pool.len().max(1) as f64;
        Ok(())
    }
    fn plan(&mut self, _round: u32, client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let mut p = base.clone();
        p.prox_mu = self.mu_for(client, base.prox_mu);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{base_plan, info};
    use super::*;

    #[test]
    fn clients_then_devices_then_scaled_mu() {
        let mut p = ProxMu {
            mu: None,
            gamma: 1.0,
            devices: [("phone".to_string(), 2.0)].into_iter().collect(),
            clients: [(3u64, 0.25)].into_iter().collect(),
            mean_n: 0.0,
        };
        let pool = vec![
            info(0, 100, vec![], None),
            info(1, 300, vec![], Some("phone")),
            info(3, 800, vec![], Some("phone")),
        ];
        p.start(&pool).unwrap(); // n̄ = 400
        let mut b = base_plan();
        b.prox_mu = 0.5;
        let mu = |p: &mut ProxMu, c: &ClientInfo| p.plan(1, c, &b).unwrap();
        // Scaled: 0.5 · (100/400)^1 = 0.125; rates untouched.
        let a = mu(&mut p, &pool[0]);
        assert_eq!(a.prox_mu, 0.125);
        assert_eq!(a.base_lr, b.base_lr);
        assert_eq!(mu(&mut p, &pool[1]).prox_mu, 2.0); // device class
        assert_eq!(mu(&mut p, &pool[2]).prox_mu, 0.25); // client id wins
        p.mu = Some(4.0);
        p.gamma = -0.5;
        // 4 · (100/400)^−0.5 = 8
        assert!((mu(&mut p, &pool[0]).prox_mu - 8.0).abs() < 1e-12);
    }
}
