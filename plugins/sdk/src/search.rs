//! Search plugins: the model's queries go in, passages come out.

pub use crate::types::Passage;

/// A search tool: built once per instance from its settings. Export it with
/// [`export_search!`](crate::export_search).
pub trait Search: Sized + Send + Sync + 'static {
    /// Reads and checks the settings ([`crate::config`]); an error keeps the plugin from
    /// loading.
    fn new() -> Result<Self, String>;

    /// One list of at most `top_k` passages per query, best first.
    fn search(&self, queries: Vec<String>, top_k: u32) -> Result<Vec<Vec<Passage>>, String>;
}

/// The host's own index (the corpus the run was started with).
pub mod retriever {
    use super::Passage;

    /// Retrieves at most `top_k` passages for every query.
    pub fn retrieve(queries: &[String], top_k: u32) -> Result<Vec<Vec<Passage>>, String> {
        crate::bindings::search::research::plugins::retriever::retrieve(queries, top_k)
    }
}

/// Exports a type (any path) that implements [`Search`] as this component's search tool.
#[macro_export]
macro_rules! export_search {
    ($ty:ty) => {
        const _: () = {
            static PLUGIN: $crate::__private::Slot<$ty> = $crate::__private::Slot::new();
            struct Export;
            impl $crate::bindings::search::Guest for Export {
                fn init() -> ::core::result::Result<(), ::std::string::String> {
                    PLUGIN.init(<$ty as $crate::search::Search>::new)
                }
            }
            impl $crate::bindings::search::exports::research::plugins::search::Guest for Export {
                fn search(
                    queries: ::std::vec::Vec<::std::string::String>,
                    top_k: u32,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<::std::vec::Vec<$crate::search::Passage>>,
                    ::std::string::String,
                > {
                    <$ty as $crate::search::Search>::search(PLUGIN.get()?, queries, top_k)
                }
            }
            $crate::bindings::search::__export_search_world!(Export with_types_in $crate::bindings::search);
        };
    };
}
