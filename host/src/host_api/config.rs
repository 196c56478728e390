use crate::bindings::switchboard::plugin::config::Host;
use crate::runtime::InstanceState;

impl Host for InstanceState {
    async fn all(&mut self) -> String {
        self.plugin.config_json.clone()
    }

    async fn get(&mut self, key: String) -> Option<String> {
        self.plugin.config.get(&key).map(ToString::to_string)
    }
}
