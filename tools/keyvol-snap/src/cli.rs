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
    /// JMESPath expression applied to the response (as the aws CLI), e.g. SnapshotId or Blocks[?BlockIndex > `3`].BlockIndex
    #[arg(long, global = true)]
    pub query: Option<String>,
    /// The command's arguments as JSON (or file://PATH); see --generate-cli-skeleton
    #[arg(long, global = true, value_name = "JSON")]
    pub cli_input_json: Option<String>,
    /// Print a JSON skeleton of the command's arguments for --cli-input-json, and do nothing else
    #[arg(long, global = true)]
    pub generate_cli_skeleton: bool,
    /// Log keyvol's debug lines to stderr
    #[arg(long, global = true)]
    pub debug: bool,
}

/// The whole command tree (for completions, man pages and the help check).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// CreateSnapshot: cut the volume now and store its changed chunks
    #[command(
        after_help = "Examples:\n  keyvol-snap create vol-0123456789abcdef0 --description nightly --wait\n  keyvol-snap create vol-0123456789abcdef0 --freeze /mnt/data"
    )]
    Create {
        /// The volume to snapshot (vol-...), attached or not
        volume_id: String,
        /// A description stored with the snapshot
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
    #[command(
        after_help = "Example:\n  keyvol-snap describe snap-0123456789abcdef0 --query State"
    )]
    Describe {
        /// The snapshot (snap-...)
        snapshot_id: String,
    },
    /// DescribeSnapshots: own snapshots, or with --restorable-by self those shared with you
    #[command(alias = "list")]
    #[command(
        after_help = "Example:\n  keyvol-snap describe-snapshots --restorable-by self --output text"
    )]
    DescribeSnapshots {
        /// `self`: the snapshots other accounts shared with you
        #[arg(long, value_parser = ["self"])]
        restorable_by: Option<String>,
    },
    /// DeleteSnapshot: frees only chunks no other snapshot uses
    #[command(after_help = "Example:\n  keyvol-snap delete snap-0123456789abcdef0")]
    Delete {
        /// The snapshot (snap-...)
        snapshot_id: String,
    },
    /// Wait until a snapshot is completed
    #[command(
        after_help = "Example:\n  keyvol-snap wait snap-0123456789abcdef0 --timeout-seconds 60"
    )]
    Wait {
        /// The snapshot (snap-...)
        snapshot_id: String,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// Add accounts to the snapshot's createVolumePermission
    #[command(
        after_help = "Example:\n  keyvol-snap share snap-0123456789abcdef0 --account 444455556666"
    )]
    Share {
        /// The snapshot (snap-...)
        snapshot_id: String,
        /// An account to share with (repeatable)
        #[arg(long = "account", value_name = "ID")]
        accounts: Vec<String>,
        /// Only "all" (public), which encrypted snapshots refuse
        #[arg(long)]
        group: Option<String>,
    },
    /// Remove accounts from the snapshot's createVolumePermission
    #[command(
        after_help = "Example:\n  keyvol-snap unshare snap-0123456789abcdef0 --account 444455556666"
    )]
    Unshare {
        /// The snapshot (snap-...)
        snapshot_id: String,
        /// An account to stop sharing with (repeatable)
        #[arg(long = "account", value_name = "ID", required = true)]
        accounts: Vec<String>,
    },
    /// DescribeSnapshotAttribute createVolumePermission
    #[command(after_help = "Example:\n  keyvol-snap describe-attribute snap-0123456789abcdef0")]
    DescribeAttribute {
        /// The snapshot (snap-...)
        snapshot_id: String,
        /// The attribute (only createVolumePermission)
        #[arg(long, default_value = "createVolumePermission", value_parser = ["createVolumePermission"])]
        attribute: String,
    },
    /// CopySnapshot into --region (re-encrypted under --kms-key-id)
    #[command(
        after_help = "Example:\n  keyvol-snap copy snap-0123456789abcdef0 --source-region us-east-1 --region eu-west-1 --kms-key-id alias/dr --wait"
    )]
    Copy {
        /// The snapshot to copy (snap-..., owned by or shared with you)
        snapshot_id: String,
        /// The region the snapshot is in
        #[arg(long)]
        source_region: String,
        /// The key of the destination region to re-encrypt under (default alias/aws/ebs)
        #[arg(long)]
        kms_key_id: Option<String>,
        /// A description of the copy
        #[arg(long)]
        description: Option<String>,
        /// Wait until the copy is completed (default: return it pending)
        #[arg(long)]
        wait: bool,
        /// Internal: print the pending snapshot as one line, then continue
        #[arg(long, hide = true)]
        report_pending: bool,
    },
    /// CreateVolume from a snapshot (same as keyvol volume create --snapshot-id)
    #[command(
        after_help = "Example:\n  keyvol-snap restore snap-0123456789abcdef0 --size 20GiB --hydrate"
    )]
    Restore {
        /// The snapshot (snap-...)
        snapshot_id: String,
        /// The key of the new volume (default: the snapshot's)
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
    #[command(
        after_help = "Example:\n  keyvol-snap list-blocks snap-0123456789abcdef0 --query 'Blocks[0].BlockIndex'"
    )]
    ListBlocks {
        /// The snapshot (snap-...)
        snapshot_id: String,
    },
    /// ListChangedBlocks between two snapshots of one lineage
    #[command(after_help = "Example:\n  keyvol-snap list-changed-blocks snap-aaaa snap-bbbb")]
    ListChangedBlocks {
        /// The older snapshot
        first_snapshot_id: String,
        /// The newer snapshot
        second_snapshot_id: String,
    },
    /// Print a shell completion script (bash, zsh or fish)
    #[command(
        after_help = "Example:\n  keyvol-snap completion bash > /etc/bash_completion.d/keyvol-snap"
    )]
    Completion {
        /// The shell
        #[arg(value_parser = ["bash", "zsh", "fish"])]
        shell: String,
    },
    /// Write man pages, one per subcommand (keyvol-snap-create.1, ...)
    #[command(after_help = "Example:\n  keyvol-snap man --out /usr/local/share/man/man1")]
    Man {
        /// The directory to write them to (created when missing)
        #[arg(long, value_name = "DIR")]
        out: String,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        super::command().debug_assert();
    }

    #[test]
    fn every_subcommand_and_argument_has_help() {
        let missing = keyvol::clidocs::missing_help(&super::command());
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }
}
