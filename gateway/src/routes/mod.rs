//! The REST handlers, a module per resource. Handlers only parse, call the control plane and convert.

pub mod catalog;
pub mod events;
pub mod system;
pub mod tasks;
