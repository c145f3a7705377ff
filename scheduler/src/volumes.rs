//! The storage objects the VolumeBinding plugin reads: PersistentVolumeClaims,
//! PersistentVolumes and StorageClasses as their informers last delivered them. Changes report
//! the cluster events that can make a pod waiting for its volumes schedulable.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;

use crate::framework::{ClusterEvent, EventMask};

/// Which storage informer an input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VolumeKind {
    Claim,
    Volume,
    Class,
}

/// One storage object from an informer.
#[derive(Debug, Clone)]
pub enum VolumeObject {
    Claim(Arc<PersistentVolumeClaim>),
    Volume(Arc<PersistentVolume>),
    Class(Arc<StorageClass>),
}

/// Claims by `namespace/name`, volumes and classes by name.
#[derive(Debug, Default)]
pub struct VolumeStore {
    claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    volumes: HashMap<String, Arc<PersistentVolume>>,
    classes: HashMap<String, Arc<StorageClass>>,
}

/// The store key of a claim.
pub fn claim_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl VolumeStore {
    /// Adds or replaces an object; returns the event it amounts to.
    pub fn apply(&mut self, o: VolumeObject) -> EventMask {
        match o {
            VolumeObject::Claim(c) => {
                let key = claim_key(&c.namespace().unwrap_or_default(), &c.name_any());
                match self.claims.insert(key, c) {
                    None => ClusterEvent::PvcAdd.into(),
                    Some(_) => ClusterEvent::PvcUpdate.into(),
                }
            }
            VolumeObject::Volume(v) => match self.volumes.insert(v.name_any(), v) {
                None => ClusterEvent::PvAdd.into(),
                Some(_) => ClusterEvent::PvUpdate.into(),
            },
            VolumeObject::Class(c) => match self.classes.insert(c.name_any(), c) {
                None => ClusterEvent::StorageClassAdd.into(),
                Some(_) => EventMask::NONE,
            },
        }
    }

    /// Removes an object (a deletion makes no waiting pod schedulable).
    pub fn delete(&mut self, kind: VolumeKind, key: &str) {
        match kind {
            VolumeKind::Claim => self.claims.remove(key).map(|_| ()),
            VolumeKind::Volume => self.volumes.remove(key).map(|_| ()),
            VolumeKind::Class => self.classes.remove(key).map(|_| ()),
        };
    }

    /// After a relist: drops the objects of `kind` that were not seen.
    pub fn retain(&mut self, kind: VolumeKind, seen: &HashSet<String>) {
        match kind {
            VolumeKind::Claim => self.claims.retain(|k, _| seen.contains(k)),
            VolumeKind::Volume => self.volumes.retain(|k, _| seen.contains(k)),
            VolumeKind::Class => self.classes.retain(|k, _| seen.contains(k)),
        }
    }

    /// A claim by namespace and name.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<&Arc<PersistentVolumeClaim>> {
        self.claims.get(&claim_key(namespace, name))
    }

    /// A PersistentVolume by name.
    pub fn volume(&self, name: &str) -> Option<&Arc<PersistentVolume>> {
        self.volumes.get(name)
    }

    /// Every PersistentVolume.
    pub fn volumes(&self) -> impl Iterator<Item = &Arc<PersistentVolume>> {
        self.volumes.values()
    }

    /// A StorageClass by name.
    pub fn class(&self, name: &str) -> Option<&Arc<StorageClass>> {
        self.classes.get(name)
    }
}
