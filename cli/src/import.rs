//! `rdconn import FILE`: one `POST /connections/import` per JSON line, in order.
//!
//! Each line's result is printed as it lands (so output piped to a file is a
//! record even if the run is killed), a progress line is kept on a terminal's
//! stderr, and the run ends with a summary: imported, already present, refresh
//! pending, refused with the reason per line, and the lines never sent. Ctrl-C
//! or an unreachable service stops the run after the line in flight, and the
//! summary says which lines landed. Running the same file again is safe: a line
//! already imported answers `already_present` without spending its token.
//! Nothing printed ever quotes a line: a line holds a token.

use std::io::{IsTerminal, Write};
use std::path::Path;

use http::Method;
use serde_json::{Value, json};

use crate::client::{Api, CallError};

/// How one line ended.
#[derive(Debug)]
enum LineResult {
    /// The service answered 2xx with this outcome.
    Landed {
        connection_id: String,
        outcome: String,
    },
    /// The service (or the line itself) refused it.
    Refused {
        connection_id: Option<String>,
        code: String,
        message: String,
    },
}

/// The whole run.
#[derive(Debug, Default)]
pub struct Report {
    lines: Vec<(usize, LineResult)>,
    /// Line numbers not sent (after an interruption or an unreachable service).
    not_sent: Vec<usize>,
    /// Why the run stopped early, if it did.
    stopped: Option<String>,
}

impl Report {
    fn count(&self, outcome: &str) -> usize {
        self.lines
            .iter()
            .filter(|(_, r)| matches!(r, LineResult::Landed { outcome: o, .. } if o == outcome))
            .count()
    }

    fn refused(&self) -> impl Iterator<Item = (usize, &LineResult)> {
        self.lines
            .iter()
            .filter(|(_, r)| matches!(r, LineResult::Refused { .. }))
            .map(|(n, r)| (*n, r))
    }

    /// Whether every line landed.
    pub fn all_landed(&self) -> bool {
        self.refused().next().is_none() && self.not_sent.is_empty()
    }

    /// The summary for people.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "Imported {}, already present {}, refresh pending {}, refused {}, not sent {}.",
            self.count("imported"),
            self.count("already_present"),
            self.count("refresh_pending"),
            self.refused().count(),
            self.not_sent.len()
        );
        for (line, result) in self.refused() {
            if let LineResult::Refused {
                connection_id,
                code,
                message,
            } = result
            {
                let id = connection_id.as_deref().unwrap_or("-");
                out.push_str(&format!("\n  line {line} ({id}): {code}: {message}"));
            }
        }
        if let Some(why) = &self.stopped {
            out.push_str(&format!(
                "\nStopped early ({why}): lines {} were not sent.",
                ranges(&self.not_sent)
            ));
        }
        if self.count("refresh_pending") > 0 {
            out.push_str("\nRefresh pending: stored, with the first refresh still to come (the schedule retries it, or run the same file again).");
        }
        if !self.all_landed() {
            out.push_str("\nRunning the same file again is safe: lines already imported answer already_present without spending their token.");
        }
        out
    }

    /// The summary as JSON.
    pub fn summary_json(&self) -> Value {
        json!({
            "summary": {
                "imported": self.count("imported"),
                "already_present": self.count("already_present"),
                "refresh_pending": self.count("refresh_pending"),
                "refused": self.refused().map(|(line, r)| match r {
                    LineResult::Refused { connection_id, code, message } => json!({
                        "line": line, "connection_id": connection_id, "code": code, "message": message,
                    }),
                    LineResult::Landed { .. } => Value::Null,
                }).collect::<Vec<_>>(),
                "not_sent": self.not_sent,
                "stopped": self.stopped,
            }
        })
    }
}

/// `3, 5-9` for `[3, 5, 6, 7, 8, 9]`.
fn ranges(lines: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = lines.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(", ")
}

/// The numbered non-blank lines of `file` (`-`: standard input).
///
/// # Errors
/// When the file cannot be read.
pub fn read_lines(file: &Path) -> std::io::Result<Vec<(usize, String)>> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file)?
    };
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| (i + 1, line.to_owned()))
        .collect())
}

/// Sends each line in turn; prints each result to stdout as it lands.
pub async fn run(api: &Api, lines: Vec<(usize, String)>, as_json: bool) -> Report {
    let progress = std::io::stderr().is_terminal();
    let total = lines.len();
    let mut report = Report::default();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut pending = lines.into_iter().enumerate();
    for (done, (number, line)) in pending.by_ref() {
        if progress {
            eprint!("\r\x1b[2K[{done}/{total}] importing line {number}...");
        }
        let result = tokio::select! {
            biased;
            _ = &mut interrupted => None,
            result = import_line(api, &line) => Some(result),
        };
        let result = match result {
            None => {
                report.stopped = Some("interrupted".to_owned());
                report.not_sent.push(number);
                break;
            }
            Some(Err(why)) => {
                report.stopped = Some(why);
                report.not_sent.push(number);
                break;
            }
            Some(Ok(result)) => result,
        };
        print_line(number, &result, as_json);
        report.lines.push((number, result));
    }
    report
        .not_sent
        .extend(pending.map(|(_, (number, _))| number));
    if progress {
        eprint!("\r\x1b[2K");
    }
    report
}

fn print_line(number: usize, result: &LineResult, as_json: bool) {
    let text = match (result, as_json) {
        (
            LineResult::Landed {
                connection_id,
                outcome,
            },
            false,
        ) => format!("line {number}: {outcome}: {connection_id}"),
        (
            LineResult::Refused {
                connection_id,
                code,
                message,
            },
            false,
        ) => format!(
            "line {number}: refused: {}: {code}: {message}",
            connection_id.as_deref().unwrap_or("-")
        ),
        (
            LineResult::Landed {
                connection_id,
                outcome,
            },
            true,
        ) => json!({"line": number, "connection_id": connection_id, "outcome": outcome}).to_string(),
        (
            LineResult::Refused {
                connection_id,
                code,
                message,
            },
            true,
        ) => json!({"line": number, "connection_id": connection_id, "code": code, "message": message})
            .to_string(),
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

/// One line sent: its result (a refusal is one), or why the run must stop (the
/// service cannot be reached, or requests cannot be signed).
async fn import_line(api: &Api, line: &str) -> Result<LineResult, String> {
    let body: Value = match serde_json::from_str(line) {
        Ok(body @ Value::Object(_)) => body,
        _ => {
            return Ok(LineResult::Refused {
                connection_id: None,
                code: "invalid_json".to_owned(),
                message: "the line is not a JSON object".to_owned(),
            });
        }
    };
    let connection_id = body["connection_id"].as_str().map(str::to_owned);
    match api
        .call(Method::POST, "/connections/import", Some(&body))
        .await
    {
        Ok(answer) => Ok(LineResult::Landed {
            connection_id: connection_id.unwrap_or_default(),
            outcome: answer["outcome"].as_str().unwrap_or("imported").to_owned(),
        }),
        Err(CallError::Refused { code, message, .. }) => Ok(LineResult::Refused {
            connection_id,
            code,
            message,
        }),
        Err(e @ (CallError::Unreachable { .. } | CallError::Signing(_))) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_read_as_ranges() {
        assert_eq!(ranges(&[3, 5, 6, 7, 9]), "3, 5-7, 9");
        assert_eq!(ranges(&[]), "");
    }

    #[test]
    fn the_summary_names_each_refused_line_and_what_was_not_sent() {
        let report = Report {
            lines: vec![
                (
                    1,
                    LineResult::Landed {
                        connection_id: "a".into(),
                        outcome: "imported".into(),
                    },
                ),
                (
                    2,
                    LineResult::Refused {
                        connection_id: Some("b".into()),
                        code: "needs_reauth".into(),
                        message: "RD refused".into(),
                    },
                ),
            ],
            not_sent: vec![3, 4],
            stopped: Some("interrupted".into()),
        };
        let summary = report.summary();
        assert!(
            summary.starts_with(
                "Imported 1, already present 0, refresh pending 0, refused 1, not sent 2."
            ),
            "{summary}"
        );
        assert!(
            summary.contains("line 2 (b): needs_reauth: RD refused"),
            "{summary}"
        );
        assert!(summary.contains("lines 3-4 were not sent"), "{summary}");
        assert!(!report.all_landed());
    }
}
