//! Which plugin handles which event in which namespace.

use std::collections::HashMap;
use std::sync::Arc;

use crate::manifest::{EventRate, Manifest};
use crate::runtime::PluginSlot;

#[derive(Default)]
pub struct Routes {
    namespaces: HashMap<String, Arc<NamespaceRoutes>>,
}

/// The plugins bound to one namespace and the events each handles.
#[derive(Default)]
pub struct NamespaceRoutes {
    plugins: Vec<Arc<PluginSlot>>,
    events: HashMap<String, Arc<PluginSlot>>,
    /// Sockets may connect without a token.
    anonymous: bool,
    event_rate: EventRate,
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
                    routes.events.insert(event.clone(), plugin.clone());
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

    pub fn handler(&self, event: &str) -> Option<&Arc<PluginSlot>> {
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
