//! `#[derive(Lattice)]` for product lattices: structs whose fields are all lattices.
//!
//! Use it through `calm_lattice::Lattice`; the generated code names `::calm_lattice`.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::{Data, DeriveInput, Fields, Index, parse_macro_input, parse_quote};

/// Derives `Merge`, `PartialOrd` (the product order), `IsBot` and `IsTop` for a struct
/// whose fields are all lattices. See `calm_lattice::Lattice` for an example.
#[proc_macro_derive(Lattice)]
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
    let root = quote!(::calm_lattice);

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
