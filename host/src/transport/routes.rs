//! Which plugin handles which event in which namespace.

use std::collections::HashMap;
use std::sync::Arc;

use crate::manifest::{EventRate, Manifest};
use crate::metrics;
use crate::runtime::PluginSlot;

#[derive(Default)]
pub struct Routes {
    namespaces: HashMap<String, Arc<NamespaceRoutes>>,
}

/// The plugins bound to one namespace and the events each handles.
#[derive(Default)]
pub struct NamespaceRoutes {
    plugins: Vec<Arc<PluginSlot>>,
    events: HashMap<String, EventRoute>,
    /// Sockets may connect without a token.
    anonymous: bool,
    event_rate: EventRate,
}

/// The plugin that handles one event of a namespace.
pub struct EventRoute {
    pub slot: Arc<PluginSlot>,
    /// Its calls that succeeded, the common outcome, counted without a
    /// metrics lookup per event.
    pub handled_ok: metrics::Counter,
    /// The error codes its calls failed with, as counted.
    pub failure_codes: metrics::CodeLabels,
}

impl Routes {
    /// The manifest has already checked that no event is claimed twice.
    pub fn new<'a>(
        plugins: impl IntoIterator<Item = &'a Arc<PluginSlot>>,
        manifest: &Manifest,
    ) -> Self {
        let mut namespaces: HashMap<String, NamespaceRoutes> = HashMap::new();
        for plugin in plugins {
            let spec = &plugin.spec;
            for namespace in &spec.namespaces {
                let routes =
                    namespaces
                        .entry(namespace.clone())
                        .or_insert_with(|| NamespaceRoutes {
                            anonymous: manifest.anonymous_namespaces.contains(namespace),
                            event_rate: manifest.event_rate(namespace),
                            ..NamespaceRoutes::default()
                        });
                routes.plugins.push(plugin.clone());
                for event in &spec.events {
                    let route = EventRoute {
                        slot: plugin.clone(),
                        handled_ok: metrics::events_handled(
                            namespace,
                            spec.name.as_str(),
                            event,
                            "ok",
                        ),
                        failure_codes: metrics::CodeLabels::default(),
                    };
                    routes.events.insert(event.clone(), route);
                }
            }
        }
        Self {
            namespaces: namespaces
                .into_iter()
                .map(|(path, routes)| (path, Arc::new(routes)))
                .collect(),
        }
    }

    pub fn namespace(&self, path: &str) -> Option<&Arc<NamespaceRoutes>> {
        self.namespaces.get(path)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&String, &Arc<NamespaceRoutes>)> {
        self.namespaces.iter()
    }
}

impl NamespaceRoutes {
    /// Every plugin bound to the namespace, for connect and disconnect.
    pub fn plugins(&self) -> &[Arc<PluginSlot>] {
        &self.plugins
    }

    pub fn handler(&self, event: &str) -> Option<&EventRoute> {
        self.events.get(event)
    }

    pub fn anonymous(&self) -> bool {
        self.anonymous
    }

    /// How many events one socket may send.
    pub fn event_rate(&self) -> EventRate {
        self.event_rate
    }
}
