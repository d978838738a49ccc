//! Specs and ports: what a process takes and gives, checked at the boundaries.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use serde_json::{Map, Value};

/// A JSON value's kind, for port type checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Integer,
    /// Any number, whole or not.
    Number,
    /// A string.
    String,
    /// A list.
    Array,
    /// A map.
    Object,
}

impl ValueType {
    fn matches(self, value: &Value) -> bool {
        match self {
            ValueType::Null => value.is_null(),
            ValueType::Bool => value.is_boolean(),
            ValueType::Integer => value.is_i64() || value.is_u64(),
            ValueType::Number => value.is_number(),
            ValueType::String => value.is_string(),
            ValueType::Array => value.is_array(),
            ValueType::Object => value.is_object(),
        }
    }
}

/// A check on a value; `Err` carries the message shown after the port's path.
pub type Validator = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// A port's declaration failed to hold for a value: `path` names the port in full
/// (`inputs.ns.b`), `message` says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PortError {
    /// The full port path.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// One input or output: required unless it has a default or is marked optional; any type unless
/// types are given; optionally a validator.
#[derive(Clone, Default)]
pub struct Port {
    types: Vec<ValueType>,
    optional: bool,
    default: Option<Value>,
    validator: Option<Validator>,
    help: Option<String>,
}

impl Port {
    /// A required port of any type.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts values of these kinds only.
    pub fn types(mut self, types: &[ValueType]) -> Self {
        self.types = types.to_vec();
        self
    }

    /// May be left out.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Filled in with `value` when left out.
    pub fn default_value(mut self, value: Value) -> Self {
        self.default = Some(value);
        self
    }

    /// Adds a check; its `Err` message is reported after the port's path.
    pub fn validator(
        mut self,
        check: impl Fn(&Value) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.validator = Some(Arc::new(check));
        self
    }

    /// A description for people.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    fn check(&self, path: &str, value: &Value) -> Result<(), PortError> {
        if !self.types.is_empty() && !self.types.iter().any(|t| t.matches(value)) {
            return Err(error(
                path,
                format!("expected {:?}, got {value}", self.types),
            ));
        }
        if let Some(validator) = &self.validator {
            validator(value).map_err(|message| error(path, message))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port")
            .field("types", &self.types)
            .field("optional", &self.optional)
            .field("default", &self.default)
            .field("validator", &self.validator.is_some())
            .field("help", &self.help)
            .finish()
    }
}

#[derive(Debug, Clone)]
enum Entry {
    Port(Port),
    Namespace(Namespace),
}

/// A map of named ports and nested namespaces. A dynamic namespace also accepts names it does
/// not declare; a static one refuses them.
#[derive(Clone, Default)]
pub struct Namespace {
    entries: BTreeMap<String, Entry>,
    dynamic: bool,
    optional: bool,
    validator: Option<Validator>,
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("entries", &self.entries)
            .field("dynamic", &self.dynamic)
            .field("optional", &self.optional)
            .finish()
    }
}

impl Namespace {
    /// An empty, static namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a port.
    pub fn port(mut self, name: impl Into<String>, port: Port) -> Self {
        self.entries.insert(name.into(), Entry::Port(port));
        self
    }

    /// Declares a nested namespace.
    pub fn namespace(mut self, name: impl Into<String>, namespace: Namespace) -> Self {
        self.entries
            .insert(name.into(), Entry::Namespace(namespace));
        self
    }

    /// Accepts undeclared names too.
    pub fn dynamic(mut self) -> Self {
        self.dynamic = true;
        self
    }

    /// May be left out as a whole (otherwise a left-out namespace is checked as an empty map, so
    /// its defaults are filled and its required ports reported).
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Adds a check on the whole namespace, run after its ports'.
    pub fn validator(
        mut self,
        check: impl Fn(&Value) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.validator = Some(Arc::new(check));
        self
    }

    /// Copies the ports of `other` into this namespace (under `under`, when given), keeping only
    /// `include` when given: how a work chain exposes a child's inputs or outputs.
    pub fn expose(
        mut self,
        other: &Namespace,
        under: Option<&str>,
        include: Option<&[&str]>,
    ) -> Self {
        let copied: BTreeMap<String, Entry> = other
            .entries
            .iter()
            .filter(|(name, _)| include.is_none_or(|names| names.contains(&name.as_str())))
            .map(|(name, entry)| (name.clone(), entry.clone()))
            .collect();
        match under {
            Some(under) => {
                let nested = Namespace {
                    entries: copied,
                    dynamic: other.dynamic,
                    optional: other.optional,
                    validator: other.validator.clone(),
                };
                self.namespace(under, nested)
            }
            None => {
                self.entries.extend(copied);
                self
            }
        }
    }

    /// Whether a port or namespace of this name is declared.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Checks `value` against the namespace at `path`, filling in defaults.
    ///
    /// # Errors
    ///
    /// A [`PortError`] for the first port, named by its full path under `path`, whose value is
    /// missing, of the wrong type, undeclared (in a namespace that is not dynamic) or refused by a
    /// validator.
    pub fn validate(&self, path: &str, value: &mut Value) -> Result<(), PortError> {
        let Some(map) = value.as_object_mut() else {
            return Err(error(path, format!("expected a map, got {value}")));
        };
        if !self.dynamic
            && let Some(unknown) = map.keys().find(|k| !self.entries.contains_key(*k))
        {
            return Err(error(
                &join(path, unknown),
                "no such port (the namespace is not dynamic)",
            ));
        }
        for (name, entry) in &self.entries {
            let here = join(path, name);
            match (entry, map.get_mut(name)) {
                (Entry::Port(port), Some(value)) => port.check(&here, value)?,
                (Entry::Port(port), None) => match &port.default {
                    Some(default) => {
                        map.insert(name.clone(), default.clone());
                    }
                    None if port.optional => {}
                    None => return Err(error(&here, "required, but not given")),
                },
                (Entry::Namespace(namespace), Some(value)) => namespace.validate(&here, value)?,
                (Entry::Namespace(namespace), None) if namespace.optional => {}
                (Entry::Namespace(namespace), None) => {
                    let mut empty = Value::Object(Map::new());
                    namespace.validate(&here, &mut empty)?;
                    if empty.as_object().is_some_and(|m| !m.is_empty()) {
                        map.insert(name.clone(), empty);
                    }
                }
            }
        }
        if let Some(validator) = &self.validator {
            validator(value).map_err(|message| error(path, message))?;
        }
        Ok(())
    }

    /// Checks one emitted value for the top-level name `name` (types and validators only; being
    /// required is checked at the end).
    pub(crate) fn check_emitted(
        &self,
        path: &str,
        name: &str,
        value: &Value,
    ) -> Result<(), PortError> {
        let here = join(path, name);
        match self.entries.get(name) {
            Some(Entry::Port(port)) => port.check(&here, value),
            Some(Entry::Namespace(namespace)) => namespace.validate(&here, &mut value.clone()),
            None if self.dynamic => Ok(()),
            None => Err(error(
                &here,
                "no such output (the namespace is not dynamic)",
            )),
        }
    }
}

fn join(path: &str, name: &str) -> String {
    format!("{path}.{name}")
}

fn error(path: &str, message: impl Into<String>) -> PortError {
    PortError {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// A process type's inputs and outputs.
///
/// ```
/// use runtime_thread::engine::{Namespace, Port, ProcessSpec, ValueType};
/// use serde_json::json;
///
/// let spec = ProcessSpec::new(
///     Namespace::new()
///         .port("x", Port::new().types(&[ValueType::Integer]))
///         .port("scale", Port::new().default_value(json!(1)))
///         .namespace("options", Namespace::new().port("tag", Port::new().optional())),
///     Namespace::new().port("result", Port::new()),
/// );
/// let mut inputs = json!({"x": 2});
/// spec.validate_inputs(&mut inputs)?;
/// assert_eq!(inputs, json!({"x": 2, "scale": 1}));
/// let err = spec.validate_inputs(&mut json!({"x": "two"})).unwrap_err();
/// assert!(err.to_string().starts_with("inputs.x: expected [Integer]"));
/// # Ok::<(), runtime_thread::engine::PortError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    /// The inputs, checked when the process is launched.
    pub inputs: Namespace,
    /// The outputs, checked when emitted and (required ones) at finish.
    pub outputs: Namespace,
}

impl ProcessSpec {
    /// A spec from its two namespaces.
    pub fn new(inputs: Namespace, outputs: Namespace) -> Self {
        ProcessSpec { inputs, outputs }
    }

    /// A spec that accepts any inputs and outputs (the default for a process).
    pub fn any() -> &'static ProcessSpec {
        static ANY: LazyLock<ProcessSpec> = LazyLock::new(|| ProcessSpec {
            inputs: Namespace::new().dynamic(),
            outputs: Namespace::new().dynamic(),
        });
        &ANY
    }

    /// Checks the inputs, filling in defaults.
    ///
    /// # Errors
    ///
    /// As [`Namespace::validate`], with paths under `inputs`.
    pub fn validate_inputs(&self, inputs: &mut Value) -> Result<(), PortError> {
        self.inputs.validate("inputs", inputs)
    }

    /// Checks a complete set of outputs (required ones included).
    ///
    /// # Errors
    ///
    /// As [`Namespace::validate`], with paths under `outputs`.
    pub fn validate_outputs(&self, outputs: &mut Value) -> Result<(), PortError> {
        self.outputs.validate("outputs", outputs)
    }
}
