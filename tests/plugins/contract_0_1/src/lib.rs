//! A feed plugin as plugins were built before the contract's version 0.2.0: against
//! `sdk/wit-0.1.0/plugin.wit` directly, with the bindings of that time. It keeps every event
//! and says in `data` which contract it speaks, so that the host's tests can tell it served.

wit_bindgen::generate!({
    path: "../../../sdk/wit-0.1.0",
    world: "feed-plugin",
});

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct FirstContract;

impl Guest for FirstContract {
    fn describe() -> Manifest {
        Manifest {
            name: "contract_0_1".into(),
            version: "0.1.0".into(),
            models: Vec::new(),
            needs_payload: false,
        }
    }

    fn shape(_ctx: Context, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
        Ok(events
            .into_iter()
            .map(|event| ShapedEvent {
                id: event.id,
                payload: PayloadChange::Keep,
                data: Some(r#"{"contract":"0.1.0"}"#.into()),
            })
            .collect())
    }
}

#[cfg(target_arch = "wasm32")]
export!(FirstContract);
