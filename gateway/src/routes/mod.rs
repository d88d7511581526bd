//! The REST handlers, a module per resource. Handlers only parse, call the control plane and convert.

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod chains;
pub mod config;
pub mod dead_letters;
pub mod events;
pub mod policies;
pub mod schedules;
pub mod system;
pub mod tasks;
