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
use syn::{Data, DeriveInput, Index, parse_macro_input, parse_quote};

/// Derives `Merge`, `PartialOrd` (the product order), `IsBot` and `IsTop` for a struct
/// whose fields are all lattices. See `calm_lattice::Lattice` for an example.
#[proc_macro_derive(Lattice, attributes(lattice))]
pub fn derive_lattice(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    derived(Product::of(&input).map(|p| p.lattice()))
}

/// The derive's code, or its error as a compile error at the struct.
fn derived(tokens: syn::Result<TokenStream2>) -> TokenStream {
    tokens.unwrap_or_else(|err| err.to_compile_error()).into()
}

impl Product<'_> {
    /// `Merge`, `PartialOrd`, `IsBot` and `IsTop`, field by field.
    fn lattice(&self) -> TokenStream2 {
        let product = self;
        let (root, name, accessors) = (&product.root, &product.input.ident, &product.members);

        // Each impl asks of every field type only what it needs.
        let merge_generics = product.generics(quote!(#root::Merge));
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

        let ord_generics = product.generics(quote!(::core::cmp::PartialOrd));
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

        // `IsBot` and `IsTop`: when every field is.
        let every = |tr: TokenStream2, method: TokenStream2| {
            let generics = product.generics(tr.clone());
            let (impl_g, ty_g, where_g) = generics.split_for_impl();
            quote! {
                impl #impl_g #tr for #name #ty_g #where_g {
                    fn #method(&self) -> bool {
                        true #( && #tr::#method(&self.#accessors) )*
                    }
                }
            }
        };
        let bot = every(quote!(#root::IsBot), quote!(is_bot));
        let top = every(quote!(#root::IsTop), quote!(is_top));

        quote! { #merge #ord #bot #top }
    }
}

/// Derives `Atomize` for a product lattice whose fields all atomize: its atoms are the
/// struct with one field set to one of that field's atoms (every other field bottom). See
/// `calm_lattice::Atomize`.
#[proc_macro_derive(Atomize, attributes(lattice))]
pub fn derive_atomize(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    derived(Product::of(&input).map(|p| p.atomize()))
}

/// Derives, for each field `f` of a product lattice, `with_f(delta)` (the struct with `f`
/// set to `delta`, every other field bottom) and `update_f(|f| mutator(f))` (runs a delta
/// mutator on the field and returns its delta as a whole struct, to ship to replicas). See
/// `calm_lattice::Deltas`.
#[proc_macro_derive(Deltas, attributes(lattice))]
pub fn derive_deltas(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    derived(Product::of(&input).map(|p| p.deltas()))
}

/// A struct read for the derives that build values of it field by field.
struct Product<'a> {
    input: &'a DeriveInput,
    root: TokenStream2,
    /// How each field is named in a struct expression (`name` or `0`).
    members: Vec<TokenStream2>,
    /// How its methods are named (`name` or `0`).
    names: Vec<String>,
    types: Vec<&'a syn::Type>,
    visibility: Vec<&'a syn::Visibility>,
}

impl<'a> Product<'a> {
    fn of(input: &'a DeriveInput) -> syn::Result<Product<'a>> {
        let Data::Struct(s) = &input.data else {
            return Err(syn::Error::new_spanned(
                &input.ident,
                "calm's lattice derives work on structs whose fields are lattices; \
                 for a choice between lattices write the merge by hand",
            ));
        };
        let mut members = Vec::new();
        let mut names = Vec::new();
        for (i, f) in s.fields.iter().enumerate() {
            match &f.ident {
                Some(name) => {
                    members.push(quote!(#name));
                    names.push(name.to_string());
                }
                None => {
                    let index = Index::from(i);
                    members.push(quote!(#index));
                    names.push(i.to_string());
                }
            }
        }
        let root = match explicit_root(input)? {
            Some(path) => quote!(#path),
            None => root_path(crate_name("calm-lattice").ok(), crate_name("calm").ok()),
        };
        Ok(Product {
            input,
            root,
            members,
            names,
            types: s.fields.iter().map(|f| &f.ty).collect(),
            visibility: s.fields.iter().map(|f| &f.vis).collect(),
        })
    }

    /// The struct's generics with `bound` asked of every field type.
    fn generics(&self, bound: TokenStream2) -> syn::Generics {
        let mut generics = self.input.generics.clone();
        let where_clause = generics.make_where_clause();
        for ty in &self.types {
            where_clause.predicates.push(parse_quote!(#ty: #bound));
        }
        generics
    }

    /// `Self { field: value, every other field: Default::default() }`.
    fn with(&self, field: usize, value: TokenStream2) -> TokenStream2 {
        let inits = self.members.iter().enumerate().map(|(i, m)| {
            if i == field {
                quote!(#m: #value)
            } else {
                quote!(#m: ::core::default::Default::default())
            }
        });
        quote!(Self { #( #inits, )* })
    }

    fn atomize(&self) -> TokenStream2 {
        let (root, name) = (&self.root, &self.input.ident);
        let generics =
            self.generics(quote!(#root::Atomize + #root::IsBot + ::core::default::Default));
        let (impl_g, ty_g, where_g) = generics.split_for_impl();
        let per_field = self.members.iter().enumerate().map(|(i, m)| {
            let ty = self.types[i];
            let one = self.with(i, quote!(field));
            quote! {
                for atom in #root::Atomize::atomize(self.#m) {
                    let mut field: #ty = ::core::default::Default::default();
                    #root::Merge::merge(&mut field, atom);
                    atoms.push(#one);
                }
            }
        });
        quote! {
            impl #impl_g #root::Atomize for #name #ty_g #where_g {
                type Atom = Self;
                fn atomize(self) -> impl ::core::iter::Iterator<Item = Self> {
                    let mut atoms = ::std::vec::Vec::new();
                    #( #per_field )*
                    atoms.into_iter()
                }
            }
        }
    }

    fn deltas(&self) -> TokenStream2 {
        let (root, name) = (&self.root, &self.input.ident);
        let generics = self.generics(quote!(::core::default::Default));
        let (impl_g, ty_g, where_g) = generics.split_for_impl();
        let methods = self.members.iter().enumerate().map(|(i, m)| {
            let (ty, vis) = (self.types[i], self.visibility[i]);
            let field = &self.names[i];
            let with = syn::Ident::new(&format!("with_{field}"), proc_macro2::Span::call_site());
            let update =
                syn::Ident::new(&format!("update_{field}"), proc_macro2::Span::call_site());
            let whole = self.with(i, quote!(delta));
            let merged = self.with(i, quote!(field));
            let with_doc = format!(
                "A `{name}` with `{field}` set to `delta` and every other field bottom: a delta \
                 of the whole struct that changes only `{field}`."
            );
            let update_doc = format!(
                "Runs `mutate`, a delta mutator of field `{field}` (it changes the field and \
                 returns the delta it applied), and returns that delta as a whole `{name}`, \
                 to merge into other replicas."
            );
            quote! {
                #[doc = #with_doc]
                #vis fn #with(delta: #ty) -> Self {
                    #whole
                }

                #[doc = #update_doc]
                #vis fn #update<D>(&mut self, mutate: impl ::core::ops::FnOnce(&mut #ty) -> D) -> Self
                where
                    #ty: #root::Merge<D>,
                {
                    let delta = mutate(&mut self.#m);
                    let mut field: #ty = ::core::default::Default::default();
                    #root::Merge::merge(&mut field, delta);
                    #merged
                }
            }
        });
        quote! {
            impl #impl_g #name #ty_g #where_g {
                #( #methods )*
            }
        }
    }
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
