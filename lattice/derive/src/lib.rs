//! `#[derive(Lattice)]` for product lattices: structs whose fields are all lattices.
//!
//! Use it through `calm_lattice::Lattice` (or `calm::lattice::Lattice`). The generated code
//! names the lattice crate as the deriving crate depends on it: `::calm_lattice` when it
//! depends on `calm-lattice` (under any name it gave it), else `::calm::lattice` when it
//! depends on the `calm` facade only; `#[lattice(crate = "path")]` names it explicitly
//! (for a crate that re-exports calm's lattices under a path of its own).

use proc_macro::TokenStream;
use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::{Data, DeriveInput, Fields, Index, parse_macro_input, parse_quote};

/// Derives `Merge`, `PartialOrd` (the product order), `IsBot` and `IsTop` for a struct
/// whose fields are all lattices. See `calm_lattice::Lattice` for an example.
#[proc_macro_derive(Lattice, attributes(lattice))]
pub fn derive_lattice(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(input) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

fn expand(input: DeriveInput) -> syn::Result<TokenStream2> {
    let fields = match &input.data {
        Data::Struct(s) => &s.fields,
        _ => {
            return Err(syn::Error::new_spanned(
                &input.ident,
                "#[derive(Lattice)] works on structs whose fields are lattices; \
                 for a choice between lattices write the merge by hand",
            ));
        }
    };
    let accessors: Vec<TokenStream2> = match fields {
        Fields::Named(named) => named
            .named
            .iter()
            .map(|f| {
                let name = f.ident.as_ref().expect("named field has a name");
                quote!(#name)
            })
            .collect(),
        Fields::Unnamed(unnamed) => (0..unnamed.unnamed.len())
            .map(|i| {
                let index = Index::from(i);
                quote!(#index)
            })
            .collect(),
        Fields::Unit => Vec::new(),
    };
    let types: Vec<&syn::Type> = fields.iter().map(|f| &f.ty).collect();

    let name = &input.ident;
    let root = match explicit_root(&input)? {
        Some(path) => quote!(#path),
        None => root_path(crate_name("calm-lattice").ok(), crate_name("calm").ok()),
    };

    // Each impl asks of every field type only what it needs.
    let with_bounds = |bound: TokenStream2| {
        let mut generics = input.generics.clone();
        let where_clause = generics.make_where_clause();
        for ty in &types {
            where_clause.predicates.push(parse_quote!(#ty: #bound));
        }
        generics
    };

    let merge_generics = with_bounds(quote!(#root::Merge));
    let (impl_g, ty_g, where_g) = merge_generics.split_for_impl();
    let merge = quote! {
        impl #impl_g #root::Merge for #name #ty_g #where_g {
            fn merge(&mut self, other: Self) -> bool {
                let mut changed = false;
                #( changed |= #root::Merge::merge(&mut self.#accessors, other.#accessors); )*
                changed
            }
        }
    };

    let ord_generics = with_bounds(quote!(::core::cmp::PartialOrd));
    let (impl_g, ty_g, where_g) = ord_generics.split_for_impl();
    let ord = quote! {
        impl #impl_g ::core::cmp::PartialOrd for #name #ty_g #where_g {
            fn partial_cmp(&self, other: &Self) -> ::core::option::Option<::core::cmp::Ordering> {
                #root::product_order([
                    #( ::core::cmp::PartialOrd::partial_cmp(&self.#accessors, &other.#accessors), )*
                ])
            }
        }
    };

    let bot_generics = with_bounds(quote!(#root::IsBot));
    let (impl_g, ty_g, where_g) = bot_generics.split_for_impl();
    let bot = quote! {
        impl #impl_g #root::IsBot for #name #ty_g #where_g {
            fn is_bot(&self) -> bool {
                true #( && #root::IsBot::is_bot(&self.#accessors) )*
            }
        }
    };

    let top_generics = with_bounds(quote!(#root::IsTop));
    let (impl_g, ty_g, where_g) = top_generics.split_for_impl();
    let top = quote! {
        impl #impl_g #root::IsTop for #name #ty_g #where_g {
            fn is_top(&self) -> bool {
                true #( && #root::IsTop::is_top(&self.#accessors) )*
            }
        }
    };

    Ok(quote! { #merge #ord #bot #top })
}

/// The path given by `#[lattice(crate = "path")]`, if any.
fn explicit_root(input: &DeriveInput) -> syn::Result<Option<syn::Path>> {
    let mut root = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("lattice")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let path: syn::LitStr = meta.value()?.parse()?;
                root = Some(path.parse::<syn::Path>()?);
                Ok(())
            } else {
                Err(meta.error("expected `crate = \"path\"`, the path of calm's lattice crate"))
            }
        })?;
    }
    Ok(root)
}

/// Where the lattice crate is, from how the deriving crate depends on `calm-lattice` and on
/// `calm`: the lattice crate itself (its own tests and examples name it `calm_lattice`),
/// under the name the deriving crate gave it, or the facade's `lattice` module.
fn root_path(lattice: Option<FoundCrate>, facade: Option<FoundCrate>) -> TokenStream2 {
    let ident = |name: &str| syn::Ident::new(name, proc_macro2::Span::call_site());
    match (lattice, facade) {
        (Some(FoundCrate::Itself), _) => quote!(::calm_lattice),
        (Some(FoundCrate::Name(name)), _) => {
            let name = ident(&name);
            quote!(::#name)
        }
        (None, Some(FoundCrate::Name(name))) => {
            let name = ident(&name);
            quote!(::#name::lattice)
        }
        (None, Some(FoundCrate::Itself)) => quote!(::calm::lattice),
        (None, None) => quote!(::calm_lattice),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn path(lattice: Option<FoundCrate>, facade: Option<FoundCrate>) -> String {
        root_path(lattice, facade).to_string().replace(' ', "")
    }

    #[test]
    fn the_lattice_crate_is_found_through_either_dependency() {
        let name = |n: &str| Some(FoundCrate::Name(n.to_string()));
        assert_eq!(path(name("calm_lattice"), None), "::calm_lattice");
        assert_eq!(
            path(name("lat"), name("calm")),
            "::lat",
            "a renamed dependency"
        );
        assert_eq!(
            path(None, name("calm")),
            "::calm::lattice",
            "the facade only"
        );
        assert_eq!(path(None, name("c")), "::c::lattice");
        assert_eq!(path(Some(FoundCrate::Itself), None), "::calm_lattice");
    }

    #[test]
    fn an_attribute_names_the_crate() {
        let input: DeriveInput = parse_quote! {
            #[lattice(crate = "my::lattices")]
            struct S { a: u8 }
        };
        let root = explicit_root(&input).unwrap().unwrap();
        assert_eq!(quote!(#root).to_string().replace(' ', ""), "my::lattices");
        let bad: DeriveInput = parse_quote! {
            #[lattice(krate = "x")]
            struct S { a: u8 }
        };
        let Err(err) = explicit_root(&bad) else {
            panic!("an unknown key is refused");
        };
        let err = err.to_string();
        assert!(err.contains("crate = \"path\""), "{err}");
    }
}
