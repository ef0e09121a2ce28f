//! `baton suppression list|add|remove|purge-expired`: the operator's view of the RelayDomains'
//! suppression lists in the `baton-suppressions` bucket.

use std::time::Duration;

use anyhow::Context as _;
use baton_core::clock::now_ms;
use baton_core::suppression::{Entry, Source, normalize};
use baton_queue::suppression::SuppressionStore;

use crate::cli::{OutputFormat, SuppressionCommand};

pub(crate) async fn run(
    nats: &baton_queue::NatsOptions,
    command: SuppressionCommand,
) -> anyhow::Result<()> {
    let client = baton_queue::connect(nats, "baton-suppression").await?;
    let js = async_nats::jetstream::new(client);
    let store = SuppressionStore::open(&js)
        .await
        .context("opening the suppression list")?;
    let now = now_ms();
    match command {
        SuppressionCommand::List {
            relay_domain,
            all,
            output,
        } => {
            let entries: Vec<Entry> = store
                .list(relay_domain.as_deref())
                .await?
                .into_iter()
                .filter(|e| all || e.is_live(now))
                .collect();
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
                OutputFormat::Table => print_table(&entries, now),
            }
        }
        SuppressionCommand::Add {
            relay_domain,
            address,
            expire_after,
            comment,
        } => {
            anyhow::ensure!(
                address.contains('@'),
                "{address:?} is not an address (local@domain)"
            );
            anyhow::ensure!(
                relay_domain.contains('/'),
                "--relay-domain is the RelayDomain's namespace/name, e.g. team-a/example-com"
            );
            let expires_ms = match expire_after {
                None => 0,
                Some(d) => now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            };
            let entry = Entry {
                address: normalize(&address),
                relay_domain,
                source: Source::Manual,
                class: String::new(),
                reply: comment,
                queue_id: String::new(),
                created_ms: now,
                expires_ms,
            };
            store.put(&entry).await?;
            println!(
                "suppressed {} for {} ({})",
                entry.address,
                entry.relay_domain,
                expiry(&entry, now)
            );
        }
        SuppressionCommand::Remove {
            relay_domain,
            address,
        } => {
            if store.remove(&relay_domain, &address).await? {
                println!("removed {} from {relay_domain}", normalize(&address));
            } else {
                anyhow::bail!(
                    "{} is not on the list of {relay_domain}",
                    normalize(&address)
                );
            }
        }
        SuppressionCommand::PurgeExpired => {
            let n = store.purge_expired(now).await?;
            println!("purged {n} expired entries");
        }
    }
    Ok(())
}

fn expiry(e: &Entry, now: i64) -> String {
    if e.expires_ms == 0 {
        "permanent".into()
    } else if e.expires_ms <= now {
        "expired".into()
    } else {
        let left = Duration::from_secs(((e.expires_ms - now) / 1000).max(0) as u64);
        format!("expires in {}", humantime::format_duration(left))
    }
}

fn print_table(entries: &[Entry], now: i64) {
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                e.relay_domain.clone(),
                e.address.clone(),
                e.source.as_str().to_string(),
                if e.class.is_empty() {
                    "-".into()
                } else {
                    e.class.clone()
                },
                expiry(e, now),
                e.reply.chars().take(80).collect(),
            ]
        })
        .collect();
    let head = [
        "RELAY DOMAIN",
        "ADDRESS",
        "SOURCE",
        "CLASS",
        "EXPIRY",
        "REPLY",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 5 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
    }
}
