//! Passwords, key files and key slots.

use std::sync::Arc;

use tessera_tests::{PASSWORD, TestVault, cheap_kdf};
use tessera_vault::key::KeyError;
use tessera_vault::{Credential, Error, LocalBackend, OpenOptions, Vault};

fn open(tv: &TestVault, cred: Option<Credential>) -> Result<Vault, Error> {
    Vault::open(
        Arc::new(LocalBackend::new(tv.path())),
        OpenOptions::new(cred),
    )
}

#[test]
fn wrong_password_is_a_clear_error() {
    let tv = TestVault::encrypted();
    let err = open(&tv, Some(Credential::password("nope"))).unwrap_err();
    assert!(matches!(err, Error::Key(KeyError::WrongPassword)), "{err}");
    assert!(err.to_string().contains("wrong password"));
    let err = open(&tv, None).unwrap_err();
    assert!(
        err.to_string().contains("password or key file is needed"),
        "{err}"
    );
    let (keyfile, _) = Credential::generate_key_file();
    let err = open(&tv, Some(keyfile)).unwrap_err();
    assert!(err.to_string().contains("no key file key slot"), "{err}");
}

#[test]
fn slots_can_be_added_listed_removed_and_passwords_changed() {
    let tv = TestVault::encrypted();
    let vault = open(&tv, Some(Credential::password(PASSWORD))).unwrap();
    let second = vault
        .add_key_slot_with(&Credential::password("second"), "backup admin", cheap_kdf())
        .unwrap();
    let (keyfile, text) = Credential::generate_key_file();
    vault
        .add_key_slot_with(&keyfile, "key file", cheap_kdf())
        .unwrap();
    let slots = vault.key_slots().unwrap();
    assert_eq!(slots.len(), 3);
    assert_eq!(slots.iter().filter(|s| s.current).count(), 1);

    assert!(open(&tv, Some(Credential::password("second"))).is_ok());
    assert!(open(&tv, Some(Credential::from_key_file(&text).unwrap())).is_ok());

    vault.remove_key_slot(&second).unwrap();
    assert!(open(&tv, Some(Credential::password("second"))).is_err());

    // Change the password this handle was opened with.
    let vault = open(&tv, Some(Credential::password(PASSWORD))).unwrap();
    vault
        .change_password(&Credential::password("new password"))
        .unwrap();
    assert!(open(&tv, Some(Credential::password(PASSWORD))).is_err());
    let vault = open(&tv, Some(Credential::password("new password"))).unwrap();
    assert_eq!(vault.key_slots().unwrap().len(), 2);

    // The last slot cannot go.
    let by_file = open(&tv, Some(Credential::from_key_file(&text).unwrap())).unwrap();
    let pw_slot = by_file
        .key_slots()
        .unwrap()
        .into_iter()
        .find(|s| !s.current)
        .unwrap();
    by_file.remove_key_slot(&pw_slot.id).unwrap();
    let last = by_file.key_slots().unwrap()[0].id;
    assert!(
        by_file
            .remove_key_slot(&last)
            .unwrap_err()
            .to_string()
            .contains("last key slot")
    );
}

#[test]
fn unencrypted_vaults_need_no_credential_and_have_no_slots() {
    let tv = TestVault::plain();
    let vault = open(&tv, None).unwrap();
    assert!(!vault.crypto().is_encrypted());
    assert!(vault.add_key_slot(&Credential::password("x"), "").is_err());
}
