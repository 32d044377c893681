//! PostgreSQL backend (being written in the store worktree). Temporary stand-in so the crate
//! compiles; replaced wholesale.
use super::*;
#[derive(Debug)]
pub struct PostgresStore;
impl PostgresStore {
    pub fn connect(_: &str, _: u32) -> StoreResult<Self> {
        Err(StoreError::InvalidUrl("pending".into()))
    }
}
#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }
    async fn migrate(&self) -> StoreResult<()> {
        unimplemented!()
    }
    async fn ping(&self) -> StoreResult<()> {
        unimplemented!()
    }
    async fn close(&self) {}
    async fn create_user(&self, _: NewUser) -> StoreResult<UserRecord> {
        unimplemented!()
    }
    async fn find_user(&self, _: Uuid) -> StoreResult<Option<UserRecord>> {
        unimplemented!()
    }
    async fn find_credentials_by_email_key(&self, _: &str) -> StoreResult<Option<UserCredentials>> {
        unimplemented!()
    }
    async fn find_credentials(&self, _: Uuid) -> StoreResult<Option<UserCredentials>> {
        unimplemented!()
    }
    async fn update_profile(
        &self,
        _: Uuid,
        _: ProfileChange,
        _: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>> {
        unimplemented!()
    }
    async fn set_password_hash(&self, _: Uuid, _: &str, _: DateTime<Utc>) -> StoreResult<bool> {
        unimplemented!()
    }
    async fn delete_user(&self, _: Uuid) -> StoreResult<bool> {
        unimplemented!()
    }
    async fn create_session(&self, _: NewSession) -> StoreResult<SessionRecord> {
        unimplemented!()
    }
    async fn find_live_session_user(
        &self,
        _: Uuid,
        _: Uuid,
        _: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>> {
        unimplemented!()
    }
    async fn find_session_by_refresh(
        &self,
        _: &[u8],
        _: DateTime<Utc>,
    ) -> StoreResult<Option<SessionRecord>> {
        unimplemented!()
    }
    async fn rotate_refresh_token(&self, _: Rotation) -> StoreResult<RotationOutcome> {
        unimplemented!()
    }
    async fn list_live_sessions(
        &self,
        _: Uuid,
        _: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionRecord>> {
        unimplemented!()
    }
    async fn revoke_session(&self, _: Uuid, _: Uuid, _: DateTime<Utc>) -> StoreResult<bool> {
        unimplemented!()
    }
    async fn revoke_user_sessions(
        &self,
        _: Uuid,
        _: Option<Uuid>,
        _: DateTime<Utc>,
    ) -> StoreResult<u64> {
        unimplemented!()
    }
    async fn ensure_signing_key(&self, _: SigningKeyRecord) -> StoreResult<SigningKeyRecord> {
        unimplemented!()
    }
    async fn signing_keys(&self, _: DateTime<Utc>) -> StoreResult<Vec<SigningKeyRecord>> {
        unimplemented!()
    }
}
