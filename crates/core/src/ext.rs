//! Typed, serialisable extensions: the open part of every message, report, client
//! metadata row and client state (in the spirit of `http::Extensions`).
//!
//! An algorithm defines its own payload types in its own module — SCAFFOLD's server
//! control variate, FedDyn's α, a personalised recipe, the server-initialised optimiser
//! state — and puts them into the [`Extensions`] of an instruction, a reply or a
//! [`LocalState`](crate::LocalState). Payloads of different types coexist (a control
//! variate, an optimiser state and a recipe in one instruction), lookups are typed
//! (`ins.ext.get::<ScaffoldDown>()`), and no closed enum in `core` has to change when an
//! algorithm is added.
//!
//! Every payload has a stable [`Payload::NAME`], its key in the versioned binary encoding
//! ([`crate::codec`]): the encoding writes `(name, CBOR bytes)` pairs, and decoding looks
//! the name up in a [`Registry`] — an unknown name is an error that lists the known ones.
//! See `docs/arch/0008-extensions-and-codec.md`.

use fedpace_params::ParamSpec;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::fmt::Debug;

/// A typed payload that can travel in [`Extensions`].
///
/// ```
/// use fedpace_core::ext::{Extensions, Payload};
/// #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct Temperature(f32);
/// impl Payload for Temperature {
///     const NAME: &'static str = "doc-temperature";
/// }
/// let mut ext = Extensions::new();
/// ext.insert(Temperature(0.5));
/// assert_eq!(ext.get::<Temperature>(), Some(&Temperature(0.5)));
/// assert_eq!(ext.names().collect::<Vec<_>>(), vec!["doc-temperature"]);
/// ```
pub trait Payload:
    Any + Clone + Debug + PartialEq + Send + Sync + Serialize + DeserializeOwned
{
    /// Stable name: the payload's key on the wire and in checkpoints. Never reuse a name
    /// for a different type.
    const NAME: &'static str;

    /// Checks a received payload against the parameter layout (lengths, finiteness);
    /// the grid rejects a reply whose payloads do not validate. Default: nothing to check.
    fn validate(&self, _spec: &ParamSpec) -> Result<(), String> {
        Ok(())
    }

    /// Estimated heap bytes (buffers held), for memory budgets of state stores.
    /// Payloads that hold buffers must count them. Default: 0.
    fn heap_bytes(&self) -> usize {
        0
    }
}

/// Object-safe view of a [`Payload`].
pub(crate) trait ErasedPayload: Any + Send + Sync + Debug {
    fn name(&self) -> &'static str;
    fn clone_box(&self) -> Box<dyn ErasedPayload>;
    fn eq_dyn(&self, other: &dyn ErasedPayload) -> bool;
    fn encode(&self) -> Result<Vec<u8>, String>;
    fn to_json(&self) -> serde_json::Value;
    fn validate(&self, spec: &ParamSpec) -> Result<(), String>;
    fn heap_bytes(&self) -> usize;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<T: Payload> ErasedPayload for T {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn clone_box(&self) -> Box<dyn ErasedPayload> {
        Box::new(self.clone())
    }
    fn eq_dyn(&self, other: &dyn ErasedPayload) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
    fn encode(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::Value::String(e.to_string()))
    }
    fn validate(&self, spec: &ParamSpec) -> Result<(), String> {
        Payload::validate(self, spec)
    }
    fn heap_bytes(&self) -> usize {
        Payload::heap_bytes(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// A set of typed payloads, at most one per type, kept in name order (so encodings are
/// deterministic).
#[derive(Default)]
pub struct Extensions {
    entries: BTreeMap<&'static str, Box<dyn ErasedPayload>>,
}

impl Extensions {
    /// No payloads.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is no payload.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of payloads.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Inserts `value`, returning the payload of the same type it replaces.
    pub fn insert<T: Payload>(&mut self, value: T) -> Option<T> {
        let old = self.entries.insert(T::NAME, Box::new(value))?;
        old.into_any().downcast::<T>().ok().map(|b| *b)
    }

    /// `self` with `value` inserted (builder style).
    pub fn with<T: Payload>(mut self, value: T) -> Self {
        self.insert(value);
        self
    }

    /// The payload of type `T`, if present.
    pub fn get<T: Payload>(&self) -> Option<&T> {
        self.entries.get(T::NAME)?.as_any().downcast_ref::<T>()
    }

    /// The payload of type `T`, mutable.
    pub fn get_mut<T: Payload>(&mut self) -> Option<&mut T> {
        self.entries
            .get_mut(T::NAME)?
            .as_any_mut()
            .downcast_mut::<T>()
    }

    /// Takes the payload of type `T` out.
    pub fn remove<T: Payload>(&mut self) -> Option<T> {
        self.get::<T>()?;
        let b = self.entries.remove(T::NAME)?;
        b.into_any().downcast::<T>().ok().map(|b| *b)
    }

    /// Whether a payload of type `T` is present.
    pub fn contains<T: Payload>(&self) -> bool {
        self.get::<T>().is_some()
    }

    /// Whether a payload named `name` is present.
    pub fn contains_name(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The payloads' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.keys().copied()
    }

    /// Moves every payload of `other` in (replacing payloads of the same type).
    pub fn extend(&mut self, other: Extensions) {
        self.entries.extend(other.entries);
    }

    /// Keeps only the payloads whose name `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }

    /// Checks every payload against the layout; the error names the payload.
    pub fn validate(&self, spec: &ParamSpec) -> Result<(), String> {
        for (name, p) in &self.entries {
            p.validate(spec).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }

    /// Estimated heap bytes of every payload.
    pub fn heap_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, p)| 48 + k.len() + p.heap_bytes())
            .sum()
    }

    /// `(name, CBOR bytes)` of every payload, in name order.
    pub(crate) fn encode_entries(&self) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
        self.entries
            .iter()
            .map(|(k, p)| Ok((*k, p.encode().map_err(|e| format!("{k}: {e}"))?)))
            .collect()
    }

    pub(crate) fn insert_erased(&mut self, p: Box<dyn ErasedPayload>) {
        self.entries.insert(p.name(), p);
    }
}

impl Clone for Extensions {
    fn clone(&self) -> Self {
        Self {
            entries: self
                .entries
                .iter()
                .map(|(k, v)| (*k, v.clone_box()))
                .collect(),
        }
    }
}

impl PartialEq for Extensions {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((ka, a), (kb, b))| ka == kb && a.eq_dyn(b.as_ref()))
    }
}

impl Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.entries.iter()).finish()
    }
}

/// For logs and traces: a map `name → payload as JSON` (decoding needs a [`Registry`]
/// and the binary codec, not JSON).
impl Serialize for Extensions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            m.serialize_entry(k, &v.to_json())?;
        }
        m.end()
    }
}

type Decoder = fn(&[u8]) -> Result<Box<dyn ErasedPayload>, String>;

fn decode_as<T: Payload>(bytes: &[u8]) -> Result<Box<dyn ErasedPayload>, String> {
    let v: T = ciborium::from_reader(bytes).map_err(|e| e.to_string())?;
    Ok(Box::new(v))
}

/// The payload types a process can decode, by name. Built once by whoever assembles the
/// algorithms (`fedpace_algos::registry()`), passed to every decoder.
#[derive(Clone, Default)]
pub struct Registry {
    decoders: BTreeMap<&'static str, (TypeId, Decoder)>,
}

impl Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.decoders.keys()).finish()
    }
}

impl Registry {
    /// A registry with the payloads `core` itself defines ([`crate::LabelHistogram`]).
    pub fn new() -> Self {
        let mut r = Self::default();
        r.register::<crate::protocol::LabelHistogram>()
            .expect("core's own names are distinct");
        r
    }

    /// Registers `T` under [`Payload::NAME`]. Registering the same type twice is a no-op;
    /// another type under a taken name is an error naming it.
    pub fn register<T: Payload>(&mut self) -> Result<&mut Self, String> {
        match self.decoders.get(T::NAME) {
            Some((id, _)) if *id == TypeId::of::<T>() => {}
            Some(_) => {
                return Err(format!(
                    "payload name {:?} is registered for another type",
                    T::NAME
                ))
            }
            None => {
                self.decoders
                    .insert(T::NAME, (TypeId::of::<T>(), decode_as::<T>));
            }
        }
        Ok(self)
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.decoders.contains_key(name)
    }

    /// Every registered name, in order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.decoders.keys().copied()
    }

    /// Decodes one payload; an unknown name is an error listing the known ones.
    pub(crate) fn decode(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> Result<Box<dyn ErasedPayload>, String> {
        match self.decoders.get(name) {
            Some((_, dec)) => dec(bytes).map_err(|e| format!("extension {name:?}: {e}")),
            None => Err(format!(
                "unknown extension {name:?} (this build knows {})",
                self.decoders.keys().copied().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// Serde helpers that write `f32` buffers as one little-endian byte string (exact, and a
/// memory copy rather than one CBOR item per value).
pub mod f32s {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises a slice as little-endian bytes.
    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let mut b = Vec::with_capacity(v.len() * 4);
        for x in v {
            b.extend_from_slice(&x.to_le_bytes());
        }
        s.serialize_bytes(&b)
    }

    /// Reads little-endian bytes back (their length must be a multiple of 4).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        let b: serde_bytes_buf::ByteBuf = Deserialize::deserialize(d)?;
        from_bytes(&b.0).map_err(serde::de::Error::custom)
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Result<Vec<f32>, String> {
        if !b.len().is_multiple_of(4) {
            return Err(format!(
                "{} bytes is not a whole number of f32 values",
                b.len()
            ));
        }
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Same, for `Arc<Vec<f32>>` (payloads shared by every instruction of a round).
    pub mod arc {
        use serde::{Deserializer, Serializer};
        use std::sync::Arc;

        /// Serialises the shared buffer as little-endian bytes.
        pub fn serialize<S: Serializer>(v: &Arc<Vec<f32>>, s: S) -> Result<S::Ok, S::Error> {
            super::serialize(v.as_slice(), s)
        }

        /// Reads little-endian bytes back into a new shared buffer.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Vec<f32>>, D::Error> {
            super::deserialize(d).map(Arc::new)
        }
    }

    /// Same, for `Option<Vec<f32>>`.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        /// Serialises `None` as unit, `Some` as little-endian bytes.
        pub fn serialize<S: Serializer>(v: &Option<Vec<f32>>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => super::serialize(v, s),
                None => s.serialize_none(),
            }
        }

        /// Reads `None` or little-endian bytes.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f32>>, D::Error> {
            let b: Option<super::serde_bytes_buf::ByteBuf> = Deserialize::deserialize(d)?;
            b.map(|b| super::from_bytes(&b.0).map_err(serde::de::Error::custom))
                .transpose()
        }
    }

    /// A byte buffer that deserialises from a byte string (or a sequence of bytes).
    pub(crate) mod serde_bytes_buf {
        use serde::de::{SeqAccess, Visitor};
        use serde::{Deserialize, Deserializer};

        pub struct ByteBuf(pub Vec<u8>);

        impl<'de> Deserialize<'de> for ByteBuf {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = ByteBuf;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a byte string")
                    }
                    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                        Ok(ByteBuf(v.to_vec()))
                    }
                    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                        Ok(ByteBuf(v))
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<ByteBuf, A::Error> {
                        // Bounded by the input: one element per byte actually present.
                        let mut out = Vec::new();
                        while let Some(b) = a.next_element::<u8>()? {
                            out.push(b);
                        }
                        Ok(ByteBuf(out))
                    }
                }
                d.deserialize_byte_buf(V)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct A(u32);
    impl Payload for A {
        const NAME: &'static str = "test-a";
    }
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct B {
        #[serde(with = "f32s")]
        v: Vec<f32>,
    }
    impl Payload for B {
        const NAME: &'static str = "test-b";
        fn validate(&self, spec: &ParamSpec) -> Result<(), String> {
            if self.v.len() == spec.total_len() {
                Ok(())
            } else {
                Err(format!(
                    "{} values, expected {}",
                    self.v.len(),
                    spec.total_len()
                ))
            }
        }
    }
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Impostor(u32);
    impl Payload for Impostor {
        const NAME: &'static str = "test-a";
    }

    #[test]
    fn payloads_of_different_types_coexist_and_same_type_replaces() {
        let mut e = Extensions::new();
        assert!(e.insert(A(1)).is_none());
        e.insert(B { v: vec![1.0] });
        assert_eq!(e.insert(A(2)), Some(A(1)));
        assert_eq!(e.len(), 2);
        assert_eq!(e.get::<A>(), Some(&A(2)));
        e.get_mut::<B>().unwrap().v.push(2.0);
        let c = e.clone();
        assert_eq!(c, e);
        assert_eq!(e.remove::<B>().unwrap().v, vec![1.0, 2.0]);
        assert_ne!(c, e);
        // A type under another type's name is never handed out as that type.
        assert!(e.get::<Impostor>().is_none());
        assert!(e.remove::<Impostor>().is_none());
        assert!(e.contains::<A>());
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"test-a":2,"test-b":{"v":[0,0,128,63,0,0,0,64]}}"#);
    }

    #[test]
    fn registry_rejects_a_name_taken_by_another_type() {
        let mut r = Registry::new();
        r.register::<A>().unwrap();
        r.register::<A>().unwrap();
        let e = r.register::<Impostor>().err().unwrap();
        assert!(e.contains("test-a"), "{e}");
        let e = r.decode("nope", &[]).err().unwrap();
        assert!(
            e.starts_with("unknown extension \"nope\" (this build knows"),
            "{e}"
        );
    }

    #[test]
    fn validation_names_the_payload() {
        let spec = ParamSpec::builder().add("w", &[2], "body").build().unwrap();
        let e = Extensions::new().with(B { v: vec![1.0] });
        assert_eq!(
            e.validate(&spec).unwrap_err(),
            "test-b: 1 values, expected 2"
        );
    }
}
