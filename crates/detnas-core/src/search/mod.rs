//! The search stage: detector genomes and gene spaces ([`genome`]), the evolutionary engine with
//! resumable state ([`evolution`]), a search's candidates and Pareto front ([`pareto`]), and the
//! rank statistics its reports use ([`stats`]), and fitness that needs no training
//! ([`training_free`]).

pub mod evolution;
pub mod genome;
pub mod pareto;
pub mod stats;
pub mod training_free;
