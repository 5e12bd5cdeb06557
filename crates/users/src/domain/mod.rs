//! Types that cannot hold a bad value. Every input is parsed into one of these before it reaches
//! the store; a parse failure is a [`kit::FieldError`] naming the field and what to fix.

mod email;
mod full_name;
mod password;
mod role;
mod scopes;
mod user;
mod username;

pub use email::Email;
pub use full_name::FullName;
pub use password::{Password, PasswordHash};
pub use role::Role;
pub use scopes::Scopes;
pub use user::{NewUser, User, UserChanges};
pub use username::Username;
