//! The list of algorithms — one line each — and what it registers: the `[strategy]`
//! sections ([`AlgorithmConfig`]), the payload types the codec can decode
//! ([`Registry`]) and the client halves ([`ClientParts`]).
//!
//! Adding an algorithm: write its module (config type implementing
//! [`crate::config::Algorithm`], server hooks, client part, payloads), then add one line
//! below.

use crate::local::{OptimizerStateDown, OptimizerStateUp, PreScale, PreScaled};
use crate::parts::ClientParts;
use crate::personal::{PersonalGroups, PersonalModel};
use fedpace_core::ext::Payload;
use fedpace_core::Registry;
use std::sync::{Arc, OnceLock};

crate::__algorithms! {
    Fedavg => crate::fedavg::FedAvgConfig,
    Fedavgm => crate::fedopt::FedAvgMConfig,
    Fedadagrad => crate::fedopt::FedAdagradConfig,
    Fedadam => crate::fedopt::FedAdamConfig,
    Fedyogi => crate::fedopt::FedYogiConfig,
    Fedexp => crate::fedopt::FedExpConfig,
    Fednova => crate::fednova::FedNovaConfig,
    Fedprox => crate::fedprox::FedProxConfig,
    Scaffold => crate::scaffold::ScaffoldConfig,
    Feddyn => crate::feddyn::FedDynConfig,
    Fedasync => crate::fedasync::FedAsyncConfig,
    Fedbuff => crate::fedbuff::FedBuffConfig,
    Perfedavg => crate::perfedavg::PerFedAvgConfig,
    Pfedme => crate::pfedme::PFedMeConfig,
    Ditto => crate::ditto::DittoConfig,
    Fedper => crate::fedper::FedPerConfig,
    LgFedavg => crate::lgfedavg::LgFedAvgConfig,
    Fedrep => crate::fedrep::FedRepConfig,
    Fedbabu => crate::fedbabu::FedBabuConfig,
    Apfl => crate::apfl::ApflConfig,
}

/// What the algorithms register: payload decoders and client parts.
#[derive(Debug, Clone, Default)]
pub struct Algorithms {
    /// Payload types, for decoding messages and states.
    pub codecs: Registry,
    /// Client halves, for the client dispatch.
    pub client: Arc<ClientParts>,
}

impl Algorithms {
    /// Registers a payload type. Names are distinct by construction (a test checks).
    pub fn payload<T: Payload>(&mut self) -> &mut Self {
        if let Err(e) = self.codecs.register::<T>() {
            panic!("{e}");
        }
        self
    }

    /// Registers a payload read where it is needed (the local loop, a recipe), with no
    /// client part of its own.
    pub fn passive_payload<T: Payload>(&mut self) -> &mut Self {
        self.payload::<T>();
        Arc::make_mut(&mut self.client).add_passive(T::NAME);
        self
    }

    /// The client parts, to add a hook or a recipe.
    pub fn parts(&mut self) -> &mut ClientParts {
        Arc::make_mut(&mut self.client)
    }

    /// The built-in algorithms and the local loop's own payloads.
    pub fn builtin() -> Self {
        let mut a = Self {
            codecs: Registry::new(),
            client: Arc::new(ClientParts::default()),
        };
        a.passive_payload::<OptimizerStateDown>()
            .passive_payload::<OptimizerStateUp>()
            .passive_payload::<PreScale>()
            .passive_payload::<PreScaled>()
            .passive_payload::<PersonalGroups>()
            .payload::<PersonalModel>();
        AlgorithmConfig::register_all(&mut a);
        a
    }
}

/// The built-in algorithms, built once per process.
pub fn builtin() -> &'static Algorithms {
    static B: OnceLock<Algorithms> = OnceLock::new();
    B.get_or_init(Algorithms::builtin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_algorithms_register_distinct_names() {
        // `payload` panics on a clash; building proves there is none.
        let a = Algorithms::builtin();
        for n in [
            "optimizer-state-down",
            "scaffold-down",
            "scaffold-up",
            "scaffold-state",
            "feddyn-down",
            "feddyn-state",
            "personal-groups",
            "personal-model",
            "pfedme",
            "ditto",
        ] {
            assert!(a.codecs.contains(n), "{n} not registered: {:?}", a.codecs);
        }
    }
}
