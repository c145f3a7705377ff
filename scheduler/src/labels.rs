//! Label selectors (pods' `LabelSelector`) and node selector terms (`NodeSelectorTerm`), parsed
//! once per pod so that matching them against thousands of nodes allocates nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A selector the API accepted but we cannot evaluate.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("unknown selector operator {op:?} for key {key:?}")]
    UnknownOperator { key: String, op: String },
    #[error("operator {op} for key {key:?} needs exactly one integer value, got {values:?}")]
    NotAnInteger {
        key: String,
        op: String,
        values: Vec<String>,
    },
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    Gt(String, i64),
    Lt(String, i64),
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
            Requirement::Gt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Requirement::Lt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }

    fn parse(key: &str, op: &str, values: &[String], numeric: bool) -> Result<Self, SelectorError> {
        let k = key.to_string();
        let int = || -> Result<i64, SelectorError> {
            match values {
                [v] => v.parse().map_err(|_| SelectorError::NotAnInteger {
                    key: k.clone(),
                    op: op.to_string(),
                    values: values.to_vec(),
                }),
                _ => Err(SelectorError::NotAnInteger {
                    key: k.clone(),
                    op: op.to_string(),
                    values: values.to_vec(),
                }),
            }
        };
        Ok(match op {
            "In" => Requirement::In(k, values.to_vec()),
            "NotIn" => Requirement::NotIn(k, values.to_vec()),
            "Exists" => Requirement::Exists(k),
            "DoesNotExist" => Requirement::DoesNotExist(k),
            "Gt" if numeric => Requirement::Gt(k.clone(), int()?),
            "Lt" if numeric => Requirement::Lt(k.clone(), int()?),
            _ => {
                return Err(SelectorError::UnknownOperator {
                    key: k,
                    op: op.to_string(),
                })
            }
        })
    }
}

/// A parsed `LabelSelector`: all requirements must hold. An empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    pub fn from_label_selector(s: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in s.match_labels.iter().flatten() {
            requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for e in s.match_expressions.iter().flatten() {
            requirements.push(Requirement::parse(
                &e.key,
                &e.operator,
                e.values.as_deref().unwrap_or_default(),
                false,
            )?);
        }
        Ok(Self { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// A parsed `NodeSelectorTerm`: expressions over labels and fields (only `metadata.name`, as
/// upstream), all of which must hold. An empty term matches nothing, as upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTerm {
    pub expressions: Vec<Requirement>,
    pub fields: Vec<Requirement>,
}

impl NodeTerm {
    pub fn parse(t: &NodeSelectorTerm) -> Result<Self, SelectorError> {
        let parse_all = |reqs: &Option<Vec<NodeSelectorRequirement>>| {
            reqs.iter()
                .flatten()
                .map(|r| {
                    Requirement::parse(
                        &r.key,
                        &r.operator,
                        r.values.as_deref().unwrap_or_default(),
                        true,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            expressions: parse_all(&t.match_expressions)?,
            fields: parse_all(&t.match_fields)?,
        })
    }

    pub fn matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.expressions.is_empty() && self.fields.is_empty() {
            return false;
        }
        if !self.expressions.iter().all(|r| r.matches(labels)) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        let fields = BTreeMap::from([("metadata.name".to_string(), node_name.to_string())]);
        self.fields.iter().all(|r| r.matches(&fields))
    }
}

/// Terms ORed together, as in `requiredDuringSchedulingIgnoredDuringExecution`.
pub fn any_term_matches(
    terms: &[NodeTerm],
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    terms.iter().any(|t| t.matches(node_name, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_table() {
        let sel = Selector::from_label_selector(&LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        })
        .unwrap();
        let cases = [
            (labels(&[("app", "web")]), true),
            (labels(&[("app", "web"), ("tier", "fe")]), true),
            (labels(&[("app", "web"), ("tier", "db")]), false),
            (labels(&[("app", "api")]), false),
            (labels(&[]), false),
        ];
        for (l, want) in cases {
            assert_eq!(sel.matches(&l), want, "{l:?}");
        }
        assert!(Selector::default().matches(&labels(&[])));
    }

    #[test]
    fn node_term_table() {
        let term = |key: &str, op: &str, values: &[&str]| {
            NodeTerm::parse(&NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: key.into(),
                    operator: op.into(),
                    values: Some(values.iter().map(|s| s.to_string()).collect()),
                }]),
                match_fields: None,
            })
        };
        let l = labels(&[("zone", "a"), ("cores", "8")]);
        assert!(term("zone", "In", &["a", "b"]).unwrap().matches("n", &l));
        assert!(!term("zone", "NotIn", &["a"]).unwrap().matches("n", &l));
        assert!(term("cores", "Gt", &["4"]).unwrap().matches("n", &l));
        assert!(!term("cores", "Lt", &["4"]).unwrap().matches("n", &l));
        assert!(term("gpu", "DoesNotExist", &[]).unwrap().matches("n", &l));
        assert!(term("cores", "Gt", &["x"]).is_err());
        assert!(term("cores", "Near", &["x"]).is_err());
        assert!(
            !NodeTerm::default().matches("n", &l),
            "an empty term matches nothing"
        );
        let by_name = NodeTerm::parse(&NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec!["n1".into()]),
            }]),
        })
        .unwrap();
        assert!(by_name.matches("n1", &l));
        assert!(!by_name.matches("n2", &l));
    }
}
