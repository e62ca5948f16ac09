import { MemoryDatastore } from '../../plugin/datastore/memory.js';
import { datastoreContract } from '../contract/datastore.contract.js';

datastoreContract('memory', async () => new MemoryDatastore());
