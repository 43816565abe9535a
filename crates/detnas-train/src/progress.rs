//! Training events as the command line prints them (stderr), for programs that want the same.

use crate::checkpoint::LogEntry;
use crate::trainer::TrainEvent;

/// Prints a training event to stderr: data counts and problems, skipped images, log lines.
pub fn print_event(event: TrainEvent<'_>) {
    match event {
        TrainEvent::Data { train, val, train_images, val_images } => {
            eprintln!("data: {train_images} training images, {val_images} held-out images");
            for (what, report) in [("training", Some(train)), ("held-out", val)] {
                if let Some(r) = report.filter(|r| r.problems() > 0) {
                    eprintln!("{what} data problems ({}):", r.source);
                    for line in r.to_string().lines() {
                        eprintln!("  {line}");
                    }
                }
            }
        }
        TrainEvent::BadImage(bad) => eprintln!("warning: skipped an undecodable training image: {bad}"),
        TrainEvent::Log(e) => print_log(e),
    }
}

/// One log line: step, loss and its parts, learning rate, throughput, data wait.
pub fn print_log(e: &LogEntry) {
    let parts: Vec<String> = e.parts.iter().map(|p| format!("{} {:.4}", p.name, p.value)).collect();
    eprintln!(
        "step {:>6}  loss {:.4} ({})  lr {:.5}  {:.1} images/s  data wait {:.1} ms/step",
        e.step,
        e.loss,
        parts.join(", "),
        e.lr,
        e.images_per_s,
        e.data_wait_ms
    );
}
