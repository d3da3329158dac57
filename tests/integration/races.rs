//! Replace and revoke under load: no request sent after a key was retired is admitted with it.

use std::time::Duration;

use crate::util::Server;
use crate::workload::{RaceSettings, race};

#[test]
fn replace_and_revoke_under_load_admit_nothing_stale() {
    let server = Server::start();
    let report =
        race(&server, &RaceSettings { clients: 8, cycles: 40, max_time: Duration::from_secs(20) });
    eprintln!("{report}");
    assert!(report.holds(), "{report:#?}");
    assert!(report.cycles >= 10, "too few cycles to mean anything: {report:?}");
    assert!(report.admitted > 100 && report.refused > 10, "the race did not race: {report:?}");
}
