//! The Smart Sync plugin SDK: what an integrator depends on to write a plugin that filters and
//! shapes one app_type's feed. The WIT contract and the plugin trait live here.
