//! The `keyvol-snap` command line (clap derive): the aws CLI's snapshot
//! vocabulary, global options accepted before or after the command.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "keyvol-snap",
    version,
    about = "Snapshots of keyvol volumes: incremental, point-in-time, shareable, copied re-encrypted, restored lazily"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Args)]
pub struct Global {
    /// State directory (env KEYVOL_HOME)
    #[arg(long, global = true)]
    pub home: Option<String>,
    /// Profile to act as (env KEYVOL_PROFILE)
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Region (env KEYVOL_REGION); the destination region of a copy
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Output format: json (default), text or table
    #[arg(long, global = true, value_parser = ["json", "text", "table"])]
    pub output: Option<String>,
    /// Print only this field (dotted path, e.g. SnapshotId or Blocks[0].BlockIndex)
    #[arg(long, global = true)]
    pub query: Option<String>,
    /// Log keyvol's debug lines to stderr
    #[arg(long, global = true)]
    pub debug: bool,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// CreateSnapshot: cut the volume now and store its changed chunks
    Create {
        volume_id: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Freeze this mounted filesystem (fsfreeze) around the cut
        #[arg(long, value_name = "MOUNTPOINT")]
        freeze: Option<String>,
        /// Wait until the snapshot is completed (default: return it pending)
        #[arg(long)]
        wait: bool,
        /// Internal: print the pending snapshot as one line, then continue
        #[arg(long, hide = true)]
        report_pending: bool,
    },
    /// DescribeSnapshots of one snapshot
    Describe { snapshot_id: String },
    /// DescribeSnapshots: own snapshots, or with --restorable-by self those shared with you
    #[command(alias = "list")]
    DescribeSnapshots {
        #[arg(long, value_parser = ["self"])]
        restorable_by: Option<String>,
    },
    /// DeleteSnapshot: frees only chunks no other snapshot uses
    Delete { snapshot_id: String },
    /// Wait until a snapshot is completed
    Wait {
        snapshot_id: String,
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// Add accounts to the snapshot's createVolumePermission
    Share {
        snapshot_id: String,
        #[arg(long = "account", value_name = "ID")]
        accounts: Vec<String>,
        /// Only "all" (public), which encrypted snapshots refuse
        #[arg(long)]
        group: Option<String>,
    },
    /// Remove accounts from the snapshot's createVolumePermission
    Unshare {
        snapshot_id: String,
        #[arg(long = "account", value_name = "ID", required = true)]
        accounts: Vec<String>,
    },
    /// DescribeSnapshotAttribute createVolumePermission
    DescribeAttribute {
        snapshot_id: String,
        #[arg(long, default_value = "createVolumePermission", value_parser = ["createVolumePermission"])]
        attribute: String,
    },
    /// CopySnapshot into --region (re-encrypted under --kms-key-id)
    Copy {
        snapshot_id: String,
        #[arg(long)]
        source_region: String,
        #[arg(long)]
        kms_key_id: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        wait: bool,
        #[arg(long, hide = true)]
        report_pending: bool,
    },
    /// CreateVolume from a snapshot (same as keyvol volume create --snapshot-id)
    Restore {
        snapshot_id: String,
        #[arg(long)]
        kms_key_id: Option<String>,
        /// At least the snapshot's size (e.g. 2GiB)
        #[arg(long)]
        size: Option<String>,
        /// Fetch every chunk now instead of on first read
        #[arg(long)]
        hydrate: bool,
    },
    /// ListSnapshotBlocks (512 KiB blocks and their checksums)
    ListBlocks { snapshot_id: String },
    /// ListChangedBlocks between two snapshots of one lineage
    ListChangedBlocks {
        first_snapshot_id: String,
        second_snapshot_id: String,
    },
}
