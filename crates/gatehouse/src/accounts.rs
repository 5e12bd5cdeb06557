//! `gatehouse accounts create`: an account made directly in the users database — a deployment's
//! first admin, since only the quickstart seeds demo accounts and the API needs an admin to
//! create one. Run beside the users service (`kubectl exec deploy/users -- gatehouse accounts
//! create …`): it reads the same `GATEHOUSE_DATABASE_URL`.

use std::io::BufRead;

use anyhow::Context;
use users::domain::Role;
use users::{Account, Created};

/// What the command line says of the account; the password is read from stdin, never an
/// argument (arguments show in `ps` and shell history).
pub struct NewAccount {
    pub database_url: String,
    pub username: String,
    pub email: String,
    pub full_name: Option<String>,
    pub role: String,
    pub scopes: Vec<String>,
}

/// Creates the account; the password is the first line of `password`.
pub async fn create(new: NewAccount, password: impl BufRead) -> anyhow::Result<String> {
    let role = Role::parse(&new.role).map_err(|error| anyhow::anyhow!("{}", error.message))?;
    let password = password
        .lines()
        .next()
        .context("no password on stdin")?
        .context("reading the password from stdin")?;
    let db = users::connect(&new.database_url)
        .await
        .context("opening the users database")?;
    let full_name = new.full_name.unwrap_or_else(|| new.username.clone());
    let account = Account {
        username: &new.username,
        email: &new.email,
        full_name: &full_name,
        password,
        role,
        scopes: new.scopes,
    };
    match users::create_account(&db, account).await? {
        Created::New(id) => Ok(format!(
            "created {} ({id}), role {}",
            new.username,
            role.as_str()
        )),
        Created::Exists => {
            anyhow::bail!("an account named {} exists; nothing changed", new.username)
        }
        Created::Taken(field) => anyhow::bail!("another account has this {field}; nothing created"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(folder: &tempfile::TempDir, username: &str, email: &str) -> NewAccount {
        NewAccount {
            database_url: format!("sqlite://{}/data/users.db", folder.path().display()),
            username: username.to_owned(),
            email: email.to_owned(),
            full_name: None,
            role: "admin".to_owned(),
            scopes: vec!["time:read".to_owned()],
        }
    }

    #[tokio::test]
    async fn the_first_admin_is_created_once_and_never_overwritten() {
        let folder = tempfile::tempdir().unwrap();
        let said = create(
            account(&folder, "root", "root@example.com"),
            "a long password\n".as_bytes(),
        )
        .await
        .unwrap();
        assert!(said.starts_with("created root"), "{said}");
        let again = create(
            account(&folder, "root", "other@example.com"),
            "another one\n".as_bytes(),
        )
        .await
        .unwrap_err();
        assert!(format!("{again:#}").contains("exists"), "{again:#}");
        let taken = create(
            account(&folder, "second", "root@example.com"),
            "a long password\n".as_bytes(),
        )
        .await
        .unwrap_err();
        assert!(format!("{taken:#}").contains("email"), "{taken:#}");
    }

    #[tokio::test]
    async fn bad_values_are_refused_naming_the_field() {
        let folder = tempfile::tempdir().unwrap();
        let mut bad_role = account(&folder, "root", "root@example.com");
        bad_role.role = "owner".to_owned();
        assert!(create(bad_role, "pw-long-enough\n".as_bytes())
            .await
            .is_err());
        let no_password = create(account(&folder, "root", "root@example.com"), "".as_bytes())
            .await
            .unwrap_err();
        assert!(
            format!("{no_password:#}").contains("password"),
            "{no_password:#}"
        );
        let bad_email = create(
            account(&folder, "root", "not-an-email"),
            "pw-long-enough\n".as_bytes(),
        )
        .await
        .unwrap_err();
        assert!(format!("{bad_email:#}").contains("email"), "{bad_email:#}");
        let bad_name = create(
            account(&folder, "../x", "x@example.com"),
            "pw-long-enough\n".as_bytes(),
        )
        .await
        .unwrap_err();
        assert!(format!("{bad_name:#}").contains("username"), "{bad_name:#}");
    }
}
