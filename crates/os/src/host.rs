//! The machine as the configuration loader sees it: the services folder
//! and the user and group databases.

use std::path::Path;

use blackhole_core::config::{Account, Discovery, FsDiscovery, Host, IdOrName};
use nix::unistd::{Gid, Group, Uid, User};

/// The real machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemHost;

impl Host for SystemHost {
    fn discover(&self, services_dir: &Path) -> Discovery {
        FsDiscovery.discover(services_dir)
    }

    fn user(&self, who: &IdOrName) -> Result<Option<Account>, String> {
        let user = match who {
            IdOrName::Id(id) => User::from_uid(Uid::from_raw(*id)),
            IdOrName::Name(name) => User::from_name(name),
        }
        .map_err(|e| e.to_string())?;
        let Some(user) = user else {
            // A bare number with no passwd entry is still a valid uid to
            // run as (as in containers); its group is the same number.
            return Ok(match who {
                IdOrName::Id(id) => Some(Account {
                    name: id.to_string(),
                    uid: *id,
                    gid: *id,
                    groups: vec![*id],
                }),
                IdOrName::Name(_) => None,
            });
        };
        let c_name = std::ffi::CString::new(user.name.as_bytes()).map_err(|e| e.to_string())?;
        let groups = nix::unistd::getgrouplist(&c_name, user.gid)
            .map_err(|e| format!("cannot list the groups of `{}`: {e}", user.name))?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        Ok(Some(Account {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        }))
    }

    fn group(&self, who: &IdOrName) -> Result<Option<u32>, String> {
        match who {
            IdOrName::Id(id) => Ok(Some(*id)),
            IdOrName::Name(name) => Group::from_name(name)
                .map(|g| g.map(|g| g.gid.as_raw()))
                .map_err(|e| e.to_string()),
        }
    }

    fn is_root(&self) -> bool {
        crate::system::is_root()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_real_accounts() {
        let root = SystemHost
            .user(&IdOrName::Name("root".into()))
            .unwrap()
            .unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        assert_eq!(
            SystemHost
                .user(&IdOrName::Name("no-such-user-here".into()))
                .unwrap(),
            None
        );
        assert_eq!(
            SystemHost.group(&IdOrName::Name("root".into())).unwrap(),
            Some(0)
        );
        let numeric = SystemHost.user(&IdOrName::Id(54321)).unwrap().unwrap();
        assert_eq!((numeric.uid, numeric.gid), (54321, 54321));
    }
}
