//! Functions and DAGs registered: native functions in this process, WebAssembly modules
//! and DAGs in the store (code is data), and the indexes that list them.

use super::*;

pub(super) fn fn_key(name: &str) -> Bytes {
    Bytes::from(format!("{FN_PREFIX}{name}"))
}

pub(super) fn dag_key(name: &str) -> Bytes {
    Bytes::from(format!("{DAG_PREFIX}{name}"))
}

impl Executor {
    /// Registers a Rust function under `name` on this node (it shadows a stored
    /// WebAssembly function of the same name here).
    pub fn register_native(&self, name: &str, f: NativeFn) -> Result<(), FnError> {
        check_name(name)?;
        self.natives
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), f);
        Ok(())
    }

    pub(super) fn native(&self, name: &str) -> Option<NativeFn> {
        self.natives
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Checks a WebAssembly module (binary or text) and stores it as the function `name`.
    pub async fn register_wasm(&self, name: &str, module: Bytes) -> Result<(), FnError> {
        check_name(name)?;
        self.runtime.compile(name, &module)?;
        self.cache
            .write(vec![(fn_key(name), Write::Lww(module))], Ack::One)
            .await?;
        self.cache
            .write(
                vec![(
                    Bytes::from_static(FN_INDEX.as_bytes()),
                    Write::SetAdd(vec![Bytes::from(name.to_string())]),
                )],
                Ack::One,
            )
            .await?;
        Ok(())
    }

    /// Checks a DAG (shape, and that its functions exist) and stores it.
    pub async fn register_dag(&self, dag: Dag) -> Result<(), FnError> {
        dag.validate()?;
        self.check_functions(&dag).await?;
        self.cache
            .write(
                vec![(dag_key(&dag.name), Write::Lww(api::encode(&dag)))],
                Ack::One,
            )
            .await?;
        self.cache
            .write(
                vec![(
                    Bytes::from_static(DAG_INDEX.as_bytes()),
                    Write::SetAdd(vec![Bytes::from(dag.name.clone())]),
                )],
                Ack::One,
            )
            .await?;
        Ok(())
    }

    /// Registered functions (stored and native here) and DAGs.
    pub async fn list(&self) -> Result<Listing, FnError> {
        let names = |v: Option<calm_kvs::value::ReadValue>| -> Vec<String> {
            match v {
                Some(calm_kvs::value::ReadValue::Set { members }) => members
                    .iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect(),
                _ => Vec::new(),
            }
        };
        let mut functions = names(
            self.cache
                .refresh(&Bytes::from_static(FN_INDEX.as_bytes()))
                .await?,
        );
        functions.extend(
            self.natives
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned(),
        );
        functions.sort();
        functions.dedup();
        let mut dags = Vec::new();
        for name in names(
            self.cache
                .refresh(&Bytes::from_static(DAG_INDEX.as_bytes()))
                .await?,
        ) {
            if let Ok(dag) = self.load_dag(&name).await {
                dags.push(dag);
            }
        }
        Ok(Listing { functions, dags })
    }

    pub(super) async fn load_dag(&self, name: &str) -> Result<Dag, FnError> {
        check_name(name)?;
        match self.cache.get(&dag_key(name)).await? {
            Some(v) => api::decode(&value_bytes(&v)),
            None => Err(FnError::UnknownDag(name.to_string())),
        }
    }

    pub(super) async fn check_functions(&self, dag: &Dag) -> Result<(), FnError> {
        for f in &dag.functions {
            if self.native(f).is_none() && self.cache.get(&fn_key(f)).await?.is_none() {
                return Err(FnError::UnknownFunction(f.clone()));
            }
        }
        Ok(())
    }
}
