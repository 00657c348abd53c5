//! Roles and the actions they allow.

use std::fmt;
use std::str::FromStr;

use recoup_proto::v1;

/// What a credential may do within its tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Reads: every Query call, GetCase, GetImport, WatchDoNotContact, import reports.
    Viewer,
    /// Reads and the case commands.
    Agent,
    /// Reads and snapshot imports.
    Importer,
    /// Everything, keys included.
    Admin,
}

/// What a request does, as far as rights go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    CaseCommand,
    Import,
    ManageKeys,
    /// Operating the platform: rebuilding read models.
    Operate,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Agent, Role::Importer, Role::Admin];

    pub fn allows(self, action: Action) -> bool {
        matches!(
            (self, action),
            (Role::Admin, _)
                | (_, Action::Read)
                | (Role::Agent, Action::CaseCommand)
                | (Role::Importer, Action::Import)
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Agent => "agent",
            Role::Importer => "importer",
            Role::Admin => "admin",
        }
    }

    pub fn to_proto(self) -> v1::Role {
        match self {
            Role::Viewer => v1::Role::Viewer,
            Role::Agent => v1::Role::Agent,
            Role::Importer => v1::Role::Importer,
            Role::Admin => v1::Role::Admin,
        }
    }

    /// `None` for ROLE_UNSPECIFIED and values this version does not know.
    pub fn from_proto(role: i32) -> Option<Self> {
        match v1::Role::try_from(role).ok()? {
            v1::Role::Unspecified => None,
            v1::Role::Viewer => Some(Role::Viewer),
            v1::Role::Agent => Some(Role::Agent),
            v1::Role::Importer => Some(Role::Importer),
            v1::Role::Admin => Some(Role::Admin),
        }
    }
}

impl Action {
    /// The roles that allow it, for a refusal's message: "needs the agent or admin role".
    pub fn needs(self) -> &'static str {
        match self {
            Action::Read => "any role",
            Action::CaseCommand => "the agent or admin role",
            Action::Import => "the importer or admin role",
            Action::ManageKeys => "the admin role",
            Action::Operate => "the admin role",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("no role {s:?}: viewer, agent, importer or admin"))
    }
}
