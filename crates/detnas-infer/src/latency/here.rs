//! A table held against this machine: the one fingerprint policy (compare, then warn or, under
//! `strict`, refuse) and the one measurement runner built from a table, for every command that
//! predicts with a table, checks it or measures against it.

use super::measure::Runner;
use super::table::LatencyTable;
use crate::device::Device;
use crate::error::{InferError, Result};
use crate::fingerprint::{Fingerprint, Precision};

impl LatencyTable {
    /// The device the table was measured on.
    pub fn device(&self) -> Result<Device> {
        Device::parse(&self.fingerprint.device)
    }

    /// The precision the table was measured at.
    pub fn precision(&self) -> Result<Precision> {
        Precision::parse(&self.fingerprint.precision)
    }

    /// This machine's fingerprint for the table's device, threads and precision (on a CPU, the CPU
    /// provider; on CUDA, the provider the table names).
    pub fn fingerprint_here(&self) -> Result<Fingerprint> {
        let device = self.device()?;
        let provider = match device {
            Device::Cpu => "CPUExecutionProvider".to_string(),
            Device::Cuda(_) => self.fingerprint.provider.clone(),
        };
        Ok(Fingerprint::current(device, self.fingerprint.threads, &provider, self.precision()?))
    }

    /// Holds the table's fingerprint against this machine's: `None` when they match; else one
    /// warning line naming what differs (table vs here), or under `strict` an error saying so.
    pub fn check_here(&self, strict: bool) -> Result<Option<String>> {
        self.check_on(None, strict)
    }

    /// [`Self::check_here`] against where measurements will run: the latency server `remote`
    /// (its fingerprint at the table's precision; asking it also checks that it answers), or this
    /// machine.
    pub fn check_on(&self, remote: Option<&super::remote::Remote>, strict: bool) -> Result<Option<String>> {
        let (there, name) = match remote {
            Some(r) => {
                let mut f = r.info()?.fingerprint;
                f.precision = self.fingerprint.precision.clone();
                (f, format!("latency server {}", r.url()))
            }
            None => (self.fingerprint_here()?, "here".to_string()),
        };
        let diff = self.fingerprint.differences(&there);
        if diff.is_empty() {
            return Ok(None);
        }
        let text = format!(
            "latency table {} was measured on another machine ({}; table vs {name})",
            self.source,
            diff.join("; ")
        );
        if strict {
            return Err(InferError::Config(format!("{text}: rebuild it there with `detnas latency build`")));
        }
        Ok(Some(format!("warning: {text}: its predictions may not hold there")))
    }

    /// The protocol the table was measured with: its repetitions of its timing plan.
    pub fn protocol(&self) -> super::protocol::Protocol {
        super::protocol::Protocol { repetitions: self.repetitions, plan: self.timing }
    }

    /// The runner that measures as the table did: its device, threads, timing plan and precision
    /// (here; set [`Runner::remote`] to measure on a latency server); `strict`: an unavailable
    /// device fails instead of falling back to CPU.
    pub fn runner(&self, strict: bool) -> Result<Runner> {
        Ok(Runner {
            device: self.device()?,
            threads: self.fingerprint.threads,
            strict,
            timing: self.timing,
            precision: self.precision()?,
            remote: None,
            detections: self.detections,
            layout: self.layout,
        })
    }
}
