//! A shopping cart on calm, as an application writes it, with `calm` as its only calm
//! dependency:
//!
//! - the cart is a lattice derived with `#[derive(Lattice)]`: two replicas edit apart and
//!   merge to the same cart;
//! - the embedded store keeps carts in this process;
//! - given a cluster file (`calm up` writes `calm-data/cluster.toml`), the same writes go to
//!   a running cluster through `ClusterClient::connect_file`.
//!
//! Run: `cargo run -p calm-example-cart [-- calm-data/cluster.toml]`.

use calm::kvs::{ClusterClient, EmbeddedStore, KvsError, NodeConfig, Store};
use calm::lattice::{Lattice, Max, Merge, SetUnionBTreeSet};

/// A cart as a product of lattices: the items ever added, and the largest quantity asked.
#[derive(Lattice, Default, Clone, Debug, PartialEq, Eq)]
pub struct Cart {
    /// Items ever added.
    pub items: SetUnionBTreeSet<String>,
    /// The largest quantity asked for.
    pub most: Max<u64>,
}

impl Cart {
    /// A cart holding `items`, `most` at most.
    pub fn of(items: &[&str], most: u64) -> Cart {
        Cart {
            items: SetUnionBTreeSet::new_from(items.iter().map(|s| s.to_string())),
            most: Max::new(most),
        }
    }
}

/// Two replicas edit a cart apart; merging either way gives the same cart.
pub fn merged_cart() -> Cart {
    let mut phone = Cart::of(&["milk"], 2);
    let laptop = Cart::of(&["eggs", "bread"], 6);
    let mut other_way = laptop.clone();
    other_way.merge(phone.clone());
    phone.merge(laptop);
    assert_eq!(phone, other_way);
    phone
}

/// Writes `cart` as the store's add-wins set `cart:{user}` and a quantity counter; returns
/// the items the store holds afterwards.
pub async fn save(store: &impl Store, user: &str, cart: &Cart) -> Result<Vec<String>, KvsError> {
    let key = format!("cart:{user}");
    store
        .orset_add(key.clone(), cart.items.as_reveal_ref().iter().cloned())
        .await?;
    store.increment(format!("{key}:quantity"), 1).await?;
    let members = store.get(key).await?;
    let members = members
        .as_ref()
        .and_then(|v| v.members())
        .unwrap_or_default();
    Ok(members
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect())
}

#[tokio::main]
async fn main() -> Result<(), KvsError> {
    let cart = merged_cart();
    println!("merged cart: {cart:?}");
    let store = EmbeddedStore::start(NodeConfig::default())?;
    println!(
        "embedded store holds {:?}",
        save(&store, "ada", &cart).await?
    );
    if let Some(file) = std::env::args().nth(1) {
        let client = ClusterClient::connect_file(&file).await?;
        println!("cluster holds {:?}", save(&client, "ada", &cart).await?);
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;
    use calm::kvs::launch::TestCluster;

    #[tokio::test]
    async fn the_cart_merges_and_is_kept_embedded_and_in_a_cluster() {
        let cart = merged_cart();
        assert_eq!(cart, Cart::of(&["bread", "eggs", "milk"], 6));
        let store = EmbeddedStore::start(NodeConfig::default()).unwrap();
        let held = save(&store, "ada", &cart).await.unwrap();
        assert_eq!(held, ["bread", "eggs", "milk"]);

        let cluster = TestCluster::start(3).await.unwrap();
        let dir = tempfile_dir();
        let file = dir.join("cluster.toml");
        cluster.cluster_file().write(&file).unwrap();
        let client = ClusterClient::connect_file(&file).await.unwrap();
        assert_eq!(save(&client, "ada", &cart).await.unwrap(), held);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("calm-cart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
