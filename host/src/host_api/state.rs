use crate::bindings::PluginError;
use crate::bindings::switchboard::plugin::state::Host;
use crate::cluster::StateError;
use crate::runtime::InstanceState;

impl From<StateError> for PluginError {
    fn from(error: StateError) -> Self {
        PluginError::new(error.code(), error.to_string())
    }
}

impl InstanceState {
    /// Refuses a key name, value, field or member over
    /// `max_state_value_bytes` before it is kept.
    fn check_size(&self, what: impl FnOnce() -> String, size: usize) -> Result<(), StateError> {
        let max = self.plugin.max_state_value_bytes;
        if size > max {
            return Err(StateError::TooLarge {
                what: what(),
                size,
                max,
            });
        }
        Ok(())
    }

    pub(super) fn check_key(&self, key: &str) -> Result<(), StateError> {
        self.check_size(|| "the key name".to_owned(), key.len())
    }

    fn check_value(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.check_key(key)?;
        self.check_size(|| format!("the value for `{key}`"), value.len())
    }

    fn check_item(&self, key: &str, what: &str, item: &str) -> Result<(), StateError> {
        self.check_key(key)?;
        self.check_size(|| format!("the {what} in `{key}`"), item.len())
    }
}

impl Host for InstanceState {
    async fn get(&mut self, key: String) -> Result<Option<String>, PluginError> {
        Ok(self.transaction.get(&key).await?)
    }

    async fn set(
        &mut self,
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    ) -> Result<(), PluginError> {
        self.check_value(&key, &value)?;
        self.transaction.set(&key, value, ttl_ms)?;
        Ok(())
    }

    async fn delete(&mut self, key: String) -> Result<bool, PluginError> {
        Ok(self.transaction.delete(&key).await?)
    }

    async fn incr(&mut self, key: String, delta: i64) -> Result<i64, PluginError> {
        self.check_key(&key)?;
        Ok(self.transaction.incr(&key, delta).await?)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        new: String,
        ttl_ms: Option<u64>,
    ) -> Result<bool, PluginError> {
        self.check_value(&key, &new)?;
        Ok(self
            .transaction
            .compare_and_swap(&key, expected.as_deref(), new, ttl_ms)
            .await?)
    }

    async fn expire(&mut self, key: String, ttl_ms: Option<u64>) -> Result<bool, PluginError> {
        Ok(self.transaction.expire(&key, ttl_ms).await?)
    }

    async fn list_push(&mut self, key: String, values: Vec<String>) -> Result<u64, PluginError> {
        for value in &values {
            self.check_value(&key, value)?;
        }
        Ok(self.transaction.list_push(&key, values).await?)
    }

    async fn list_range(
        &mut self,
        key: String,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, PluginError> {
        Ok(self.transaction.list_range(&key, start, stop).await?)
    }

    async fn list_trim(&mut self, key: String, start: i64, stop: i64) -> Result<(), PluginError> {
        Ok(self.transaction.list_trim(&key, start, stop).await?)
    }

    async fn get_many(&mut self, keys: Vec<String>) -> Result<Vec<Option<String>>, PluginError> {
        Ok(self.transaction.get_many(&keys).await?)
    }

    async fn len(&mut self, key: String) -> Result<u64, PluginError> {
        Ok(self.transaction.len(&key).await?)
    }

    async fn hash_get(
        &mut self,
        key: String,
        field: String,
    ) -> Result<Option<String>, PluginError> {
        Ok(self.transaction.hash_get(&key, &field).await?)
    }

    async fn hash_get_all(&mut self, key: String) -> Result<Vec<(String, String)>, PluginError> {
        Ok(self.transaction.hash_get_all(&key).await?)
    }

    async fn hash_set(
        &mut self,
        key: String,
        field: String,
        value: String,
    ) -> Result<bool, PluginError> {
        self.check_item(&key, "field name", &field)?;
        self.check_item(&key, "value", &value)?;
        Ok(self.transaction.hash_set(&key, field, value).await?)
    }

    async fn hash_delete(&mut self, key: String, field: String) -> Result<bool, PluginError> {
        Ok(self.transaction.hash_delete(&key, &field).await?)
    }

    async fn hash_incr(
        &mut self,
        key: String,
        field: String,
        delta: i64,
    ) -> Result<i64, PluginError> {
        self.check_item(&key, "field name", &field)?;
        Ok(self.transaction.hash_incr(&key, &field, delta).await?)
    }

    async fn set_add(&mut self, key: String, member: String) -> Result<bool, PluginError> {
        self.check_item(&key, "member", &member)?;
        Ok(self.transaction.set_add(&key, member).await?)
    }

    async fn set_remove(&mut self, key: String, member: String) -> Result<bool, PluginError> {
        Ok(self.transaction.set_remove(&key, &member).await?)
    }

    async fn set_contains(&mut self, key: String, member: String) -> Result<bool, PluginError> {
        Ok(self.transaction.set_contains(&key, &member).await?)
    }

    async fn set_members(&mut self, key: String) -> Result<Vec<String>, PluginError> {
        Ok(self.transaction.set_members(&key).await?)
    }

    async fn sorted_add(
        &mut self,
        key: String,
        member: String,
        score: f64,
    ) -> Result<bool, PluginError> {
        self.check_item(&key, "member", &member)?;
        Ok(self.transaction.sorted_add(&key, member, score).await?)
    }

    async fn sorted_incr(
        &mut self,
        key: String,
        member: String,
        delta: f64,
    ) -> Result<f64, PluginError> {
        self.check_item(&key, "member", &member)?;
        Ok(self.transaction.sorted_incr(&key, member, delta).await?)
    }

    async fn sorted_score(
        &mut self,
        key: String,
        member: String,
    ) -> Result<Option<f64>, PluginError> {
        Ok(self.transaction.sorted_score(&key, &member).await?)
    }

    async fn sorted_remove(&mut self, key: String, member: String) -> Result<bool, PluginError> {
        Ok(self.transaction.sorted_remove(&key, &member).await?)
    }

    async fn sorted_range(
        &mut self,
        key: String,
        start: i64,
        stop: i64,
        descending: bool,
    ) -> Result<Vec<(String, f64)>, PluginError> {
        Ok(self
            .transaction
            .sorted_range(&key, start, stop, descending)
            .await?)
    }
}
