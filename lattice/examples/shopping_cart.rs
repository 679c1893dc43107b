//! Three replicas of one shopping cart — a phone, a laptop and a tablet — edit while apart,
//! then exchange what they did and agree, with no coordinator and no locks.
//!
//! The cart is an `OrMap` from item to `PNCounter` (a quantity that can go up and down).
//! Every edit returns a small delta; the devices ship deltas, in whatever order, as often as
//! they like. Run: `cargo run -p calm-lattice --example shopping_cart`.

use calm_lattice::{Merge, OrMap, PNCounter, ReplicaId};

type Cart = OrMap<String, PNCounter>;

fn show(name: &str, cart: &Cart) {
    let items: Vec<String> = cart
        .iter()
        .map(|(item, n)| format!("{item} x{}", n.value()))
        .collect();
    println!("  {name:<7} {}", items.join(", "));
}

fn add(cart: &mut Cart, who: ReplicaId, item: &str, n: u64) -> Cart {
    cart.update(who, item.to_string(), |q| {
        q.increment(who, n);
    })
}

fn take_out(cart: &mut Cart, who: ReplicaId, item: &str, n: u64) -> Cart {
    cart.update(who, item.to_string(), |q| {
        q.decrement(who, n);
    })
}

fn main() {
    let (phone_id, laptop_id, tablet_id) = (ReplicaId(1), ReplicaId(2), ReplicaId(3));
    let mut phone = Cart::default();

    // Morning: the phone fills the cart, and everyone syncs.
    let morning = vec![
        add(&mut phone, phone_id, "coffee", 1),
        add(&mut phone, phone_id, "milk", 2),
        add(&mut phone, phone_id, "bread", 1),
    ];
    let mut laptop = Cart::default();
    let mut tablet = Cart::default();
    for d in &morning {
        laptop.merge(d.clone());
        tablet.merge(d.clone());
    }
    assert_eq!(phone, laptop);
    assert_eq!(laptop, tablet);
    println!("after the morning sync, everyone has:");
    show("phone", &phone);

    // Afternoon, all three offline, editing the same cart:
    let from_phone = vec![add(&mut phone, phone_id, "milk", 1)]; // one more milk
    let from_laptop = vec![
        laptop.remove(&"bread".to_string()),      // no bread after all
        add(&mut laptop, laptop_id, "coffee", 2), // more coffee
    ];
    let mut from_tablet = vec![
        take_out(&mut tablet, tablet_id, "milk", 1), // one milk less
        add(&mut tablet, tablet_id, "bread", 1),     // concurrently wants bread
        add(&mut tablet, tablet_id, "apples", 6),
    ];
    println!("while apart:");
    show("phone", &phone);
    show("laptop", &laptop);
    show("tablet", &tablet);

    // Evening: deltas arrive late, out of order, some twice.
    from_tablet.reverse();
    for d in from_laptop.iter().chain(&from_tablet) {
        phone.merge(d.clone());
    }
    for d in from_tablet.iter().chain(&from_phone).chain(&from_phone) {
        laptop.merge(d.clone());
    }
    for d in from_phone.iter().chain(&from_laptop).chain(&morning) {
        tablet.merge(d.clone());
    }
    println!("after the evening sync:");
    show("phone", &phone);
    show("laptop", &laptop);
    show("tablet", &tablet);

    // Everyone agrees, and on what a person would expect:
    assert_eq!(phone, laptop);
    assert_eq!(laptop, tablet);
    let qty = |item: &str| phone.get(&item.to_string()).map(|n| n.value());
    assert_eq!(qty("coffee"), Some(3)); // 1 + 2
    assert_eq!(qty("milk"), Some(2)); //   2 + 1 - 1
    assert_eq!(qty("apples"), Some(6));
    // The laptop removed bread while the tablet, not having seen that, added it: the add
    // wins, and the quantity is what the tablet saw plus its own add.
    assert_eq!(qty("bread"), Some(2));
    println!("all three replicas agree.");
}
